"""`python -m serving`: run the API with uvicorn (host/port from FRAUD_HOST/FRAUD_PORT)."""

from __future__ import annotations

import argparse
import os

import uvicorn


def _settings_help() -> str:
    """The service's settings, from `ServingSettings` itself (so this help stays true)."""
    from serving.settings import ServingSettings

    lines = ["settings (environment variables; the registry is MLFLOW_TRACKING_URI):"]
    for name, field in ServingSettings.model_fields.items():
        default = "none" if field.default is None else str(field.default)
        lines.append(f"  FRAUD_{name.upper():<28} default {default}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Run the fraud prediction API (uvicorn, no access log).",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("FRAUD_HOST", "127.0.0.1"),
        help="address to listen on (FRAUD_HOST; default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("FRAUD_PORT", "8000")),
        help="port (FRAUD_PORT; default 8000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("FRAUD_WORKERS", "1")),
        help="uvicorn worker processes; more than one needs a shared feature state "
        "(FRAUD_FEATURE_STORE=redis://...)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("FRAUD_LOG_LEVEL", "warning"),
        help="uvicorn log level (FRAUD_LOG_LEVEL; default warning)",
    )
    args = parser.parse_args()
    store = os.environ.get("FRAUD_FEATURE_STORE", "memory")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers > 1 and store == "memory":
        parser.error(
            "--workers > 1 needs a shared feature state: each worker would see only part of "
            "every customer's history. Set FRAUD_FEATURE_STORE=redis://host:6379/0."
        )
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Fail over to the cached model in about a second when the registry is down, instead of
    # MLflow's default 7 retries with backoff (minutes, during which /health would not answer).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    if args.workers > 1:
        # The workers share one listening socket, and libuv (under uvloop) lets the worker that
        # wakes first accept every connection waiting: clients that open their connections at
        # once and keep them (a proxy's pool, a load generator) then all land on one worker
        # while the others idle. One accept at a time lets each worker take some.
        os.environ.setdefault("UV_TCP_SINGLE_ACCEPT", "1")
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
