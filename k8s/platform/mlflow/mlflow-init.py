"""Prepare MLflow's databases before the tracking server starts (the init container `init`).

1. The tracking store: created on an empty database, migrated to this MLflow's schema otherwise
   (what `mlflow db upgrade` does, without the URL, which carries a password, on a command line).
   The server itself refuses a database whose schema is older than its own, so an image with a
   newer MLflow is migrated here, once, before the server starts. MLflow's migrations are not
   always transactional: back the database up before deploying a new MLflow version.
2. The basic-auth app's configuration: written to AUTH_CONFIG_PATH (a memory-backed emptyDir
   read by the server through MLFLOW_AUTH_CONFIG_PATH), because MLflow reads the auth database's
   URL only from that file, and the URL carries a password, so it comes from the Secret at start
   and is never in the image, a ConfigMap or the manifest.
3. The client user the API and the flow jobs log in as (MLFLOW_TRACKING_USERNAME/PASSWORD):
   created if missing, its password reset to the Secret's when they differ (a rotation is a
   Secret change and a restart). Not an admin: `default_permission = READ` lets it read every
   experiment and model, and it manages what it creates (runs, registered versions, aliases).
   The admin user itself is created by the server on its first start, from
   MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_PERMISSION = "READ"


def env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"mlflow-init: {name} is empty: set its key in the Secret named in the manifest")
    return value


def upgrade_tracking_store(uri: str) -> None:
    from mlflow.db import upgrade

    # The function behind `mlflow db upgrade URL`: initialise an empty database, else migrate.
    upgrade.callback(uri)  # type: ignore[misc]
    print("mlflow-init: tracking store at this MLflow's schema", flush=True)


def write_auth_config(path: Path, auth_uri: str) -> None:
    # configparser treats % as interpolation: a percent-encoded password must be doubled.
    text = (
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = {auth_uri.replace('%', '%%')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    print(f"mlflow-init: auth configuration written to {path}", flush=True)


def ensure_client_user(auth_uri: str, username: str, password: str) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(auth_uri)  # creates or migrates the auth database's tables
    if not store.has_user(username, use_primary=True):
        store.create_user(username, password)
        print(f"mlflow-init: created user {username!r}", flush=True)
    elif not store.authenticate_user(username, password, use_primary=True):
        store.update_user(username, password=password)
        print(f"mlflow-init: reset the password of user {username!r}", flush=True)
    else:
        print(f"mlflow-init: user {username!r} is up to date", flush=True)


def main() -> None:
    tracking_uri = env("MLFLOW_BACKEND_STORE_URI")
    auth_uri = env("MLFLOW_AUTH_DATABASE_URI")
    config_path = Path(env("AUTH_CONFIG_PATH"))
    client, password = env("MLFLOW_CLIENT_USERNAME"), env("MLFLOW_CLIENT_PASSWORD")
    if client == env("MLFLOW_AUTH_ADMIN_USERNAME"):
        sys.exit(
            f"mlflow-init: the client user {client!r} is the admin user: give the API and the "
            "jobs a user of their own (Secret mlflow-client-credentials, key username)"
        )
    upgrade_tracking_store(tracking_uri)
    write_auth_config(config_path, auth_uri)
    ensure_client_user(auth_uri, client, password)


if __name__ == "__main__":
    main()
