"""Serve the `retraining` flow as the Prefect deployment `retraining/production`.

The monitoring flow starts a retraining through it, never by importing `pipelines`:

    run_deployment("retraining/production",
                   parameters={"production_path": ..., "production_window": ...})

A deployment lives on a Prefect server: set PREFECT_API_URL (e.g. after `prefect server start`)
and run `python -m pipelines.deploy` from the project directory; the process serves the
deployment's runs until stopped. Without PREFECT_API_URL it refuses (exit 1): Prefect's temporary
server would vanish with the process and the deployment with it. `--dry-run` prints what would
be served.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEPLOYMENT_NAME = "production"
FLOW_NAME = "retraining"
#: What `run_deployment` names: "<flow>/<deployment>".
FULL_NAME = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"


def build_deployment(params_path: str, repo: str, workdir: str) -> RunnerDeployment:
    """The `retraining/production` deployment, with the run-independent parameters set."""
    from pipelines.flows import retraining

    # `to_deployment` is sync-compatible: called from synchronous code it returns the value.
    return cast(
        "RunnerDeployment",
        retraining.to_deployment(
            name=DEPLOYMENT_NAME,
            parameters={"params_path": params_path, "repo": repo, "workdir": workdir},
        ),
    )


def deployment_summary(dep: RunnerDeployment) -> dict[str, Any]:
    """The deployment's name, entrypoint and default parameters, as Prefect will serve it."""
    return {
        "name": f"{dep.flow_name}/{dep.name}",
        "entrypoint": dep.entrypoint,
        "parameters": dep.parameters,
        "required_at_run": ["production_path"],
        "optional_at_run": ["production_window", "run_prequential"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.deploy",
        description=(
            f"Serve the Prefect flow `{FLOW_NAME}` as the deployment `{FULL_NAME}` (needs "
            "PREFECT_API_URL). Trigger it with run_deployment"
            f"('{FULL_NAME}', parameters={{'production_path': ..., 'production_window': ...}})."
        ),
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--repo", default=".", help="the DVC/git repository (default .)")
    parser.add_argument("--workdir", default="runs/retrain", help="the flow's working directory")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the deployment's name, entrypoint, parameters"
    )
    args = parser.parse_args(argv)
    dep = build_deployment(args.params, args.repo, args.workdir)
    summary = deployment_summary(dep)
    if args.dry_run:
        print(json.dumps(summary, indent=2))
        return 0
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "error: PREFECT_API_URL is not set: a deployment needs a Prefect server that outlives "
            "this process (start one with `prefect server start` and export PREFECT_API_URL="
            "http://127.0.0.1:4200/api)",
            file=sys.stderr,
        )
        return 1
    from prefect import serve

    print(f"serving {summary['name']} ({summary['entrypoint']}); Ctrl-C stops it", flush=True)
    serve(dep)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
