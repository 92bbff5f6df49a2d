"""`python -m serving`: run the API with uvicorn, as `ServingSettings` (`FRAUD_*`) says; the
command line's flags override their variables."""

from __future__ import annotations

import argparse
import os

import uvicorn
from pydantic import ValidationError

from serving.settings import ServingSettings

#: The settings the command line can override, by flag.
_FLAGS = {"host": "--host", "port": "--port", "workers": "--workers", "log_level": "--log-level"}


def _settings_help() -> str:
    """The service's settings, from `ServingSettings` itself (so this help stays true)."""
    lines = ["settings (environment variables; the registry is MLFLOW_TRACKING_URI):"]
    for name, field in ServingSettings.model_fields.items():
        default = "none" if field.default is None else str(field.default)
        lines.append(f"  FRAUD_{name.upper():<28} default {default}")
    return "\n".join(lines)


def _describe(error: ValidationError) -> str:
    """One line per invalid setting, named as the environment variable that sets it."""
    lines = []
    for e in error.errors(include_url=False):
        where = f"FRAUD_{str(e['loc'][0]).upper()}: " if e["loc"] else ""
        lines.append(where + e["msg"].removeprefix("Value error, "))
    return "; ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Run the fraud prediction API (uvicorn, no access log).",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="address to listen on (FRAUD_HOST)")
    parser.add_argument("--port", type=int, help="port (FRAUD_PORT)")
    parser.add_argument(
        "--workers",
        type=int,
        help="uvicorn worker processes (FRAUD_WORKERS); more than one needs a shared feature "
        "state (FRAUD_FEATURE_STORE=redis://...)",
    )
    parser.add_argument("--log-level", help="uvicorn log level (FRAUD_LOG_LEVEL)")
    args = parser.parse_args()
    given = {name: v for name in _FLAGS if (v := getattr(args, name)) is not None}
    try:
        settings = ServingSettings(**given)
    except ValidationError as e:
        parser.error(_describe(e))
    if settings.feature_store != "memory":
        # Unreachable at start-up: exit with the reason in one line, for the supervisor (the
        # pod's restart policy) to start again; a Redis lost while serving gives 503s instead.
        from serving.feature_store import check_reachable

        try:
            check_reachable(settings.feature_store)
        except RuntimeError as e:
            parser.exit(3, f"{parser.prog}: {e}\n")
    # The workers build their own settings from the environment: the same as these.
    for name in _FLAGS:
        os.environ[f"FRAUD_{name.upper()}"] = str(getattr(settings, name))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Fail over to the cached model in about a second when the registry is down, instead of
    # MLflow's default 7 retries with backoff (minutes, during which /health would not answer).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    if settings.workers > 1:
        # The workers share one listening socket, and libuv (under uvloop) lets the worker that
        # wakes first accept every connection waiting: clients that open their connections at
        # once and keep them (a proxy's pool, a load generator) then all land on one worker
        # while the others idle. One accept at a time lets each worker take some.
        os.environ.setdefault("UV_TCP_SINGLE_ACCEPT", "1")
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
