"""Serving benchmark: this service against `mlflow models serve`, driven by wrk (see run.py)."""
