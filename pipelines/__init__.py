"""Pipeline steps as plain functions, the DVC stage CLI and the Prefect flows that compose them."""
