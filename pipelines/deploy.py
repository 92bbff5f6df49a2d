"""Put the training side's Prefect flows on a Prefect server: serve one, or register them on a
work pool.

The monitoring flow starts a retraining through the deployment `retraining/production`, never by
importing `pipelines`:

    run_deployment("retraining/production",
                   parameters={"production_path": ..., "production_window": ...})

Two ways to run it, both need a Prefect server that outlives this process (PREFECT_API_URL;
without it the command refuses, exit 1: Prefect's temporary server would vanish with the process
and the deployment with it):

* serve (the default, on one machine): `python -m pipelines.deploy` serves
  `retraining/production` from this process, which runs each flow run as a subprocess until
  stopped;
* work pool: `python -m pipelines.deploy --work-pool NAME` registers `training/production` and
  `retraining/production` on the work pool and exits; the pool's worker runs each flow run.
  Which kind of pool it is comes from the server (fraud/work_pools.py):
  - a `process` pool (one machine: `prefect worker start --pool NAME --type process`): the
    deployments run the flows from this checkout (`--source`, default the current directory),
    as `pipelines/flows.py:training` with that directory as the runs' working directory;
  - a pool whose jobs run an image (Kubernetes, k8s/platform/prefect/): `--image IMAGE` names
    it, and the deployments name the flows by module path (the image has the project installed).
  Re-running it updates both deployments in place (Prefect identifies a deployment by flow and
  name), so it is safe to repeat.

`--dry-run` prints what would be served or registered.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, cast

from fraud.work_pools import (
    WorkPoolError,
    WorkPoolTarget,
    prepare,
    register_on_work_pool,
)

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEPLOYMENT_NAME = "production"
FLOW_NAME = "retraining"
#: What `run_deployment` names: "<flow>/<deployment>".
FULL_NAME = f"{FLOW_NAME}/{DEPLOYMENT_NAME}"
#: The training flow's deployment on a work pool (the DVC-versioned data alone).
TRAINING_FLOW_NAME = "training"
TRAINING_FULL_NAME = f"{TRAINING_FLOW_NAME}/{DEPLOYMENT_NAME}"


def build_deployment(
    params_path: str, repo: str, workdir: str, *, by_module: bool = False
) -> RunnerDeployment:
    """The `retraining/production` deployment, with the run-independent parameters set.

    by_module: name the flow by its module path (`pipelines.flows.retraining`) instead of this
    checkout's file, for a work pool (fraud.work_pools.prepare then points it at a checkout for
    a process pool; an image has the project installed and knows no file of this machine).
    """
    from prefect.flows import EntrypointType

    from pipelines.flows import retraining

    # `to_deployment` is sync-compatible: called from synchronous code it returns the value.
    return cast(
        "RunnerDeployment",
        retraining.to_deployment(
            name=DEPLOYMENT_NAME,
            parameters={"params_path": params_path, "repo": repo, "workdir": workdir},
            entrypoint_type=EntrypointType.MODULE_PATH if by_module else EntrypointType.FILE_PATH,
        ),
    )


def build_training_deployment(params_path: str, repo: str, workdir: str) -> RunnerDeployment:
    """The `training/production` deployment (by module path, for a work pool; see
    fraud.work_pools.prepare): train, evaluate and register from the DVC-versioned data of
    `repo`; a run may set `rev`."""
    from prefect.flows import EntrypointType

    from pipelines.flows import training

    return cast(
        "RunnerDeployment",
        training.to_deployment(
            name=DEPLOYMENT_NAME,
            parameters={"params_path": params_path, "repo": repo, "workdir": workdir},
            description="Train, evaluate, gate and register a model from the DVC-versioned data.",
            tags=["training"],
            entrypoint_type=EntrypointType.MODULE_PATH,
        ),
    )


def deployment_summary(dep: RunnerDeployment) -> dict[str, Any]:
    """The deployment's name, entrypoint and default parameters, as Prefect will run it."""
    summary: dict[str, Any] = {
        "name": f"{dep.flow_name}/{dep.name}",
        "entrypoint": dep.entrypoint,
        "parameters": dep.parameters,
    }
    if dep.flow_name == FLOW_NAME:
        summary["required_at_run"] = ["production_path"]
        summary["optional_at_run"] = ["production_window", "run_prequential"]
    else:
        summary["optional_at_run"] = ["rev", "run_prequential"]
    return summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.deploy",
        description=(
            f"Serve the Prefect flow `{FLOW_NAME}` as the deployment `{FULL_NAME}`, or with "
            f"--work-pool register `{TRAINING_FULL_NAME}` and `{FULL_NAME}` on a work pool "
            "(needs PREFECT_API_URL). Trigger a retraining with run_deployment"
            f"('{FULL_NAME}', parameters={{'production_path': ..., 'production_window': ...}})."
        ),
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--repo", default=".", help="the DVC/git repository (default .)")
    parser.add_argument("--workdir", default="runs/retrain", help="the retraining's working dir")
    parser.add_argument(
        "--training-workdir",
        default="runs/flow",
        help="the training flow's working directory (with --work-pool; default runs/flow)",
    )
    parser.add_argument(
        "--work-pool",
        default=None,
        metavar="NAME",
        help="register the training and retraining deployments on this work pool and exit, "
        "instead of serving; a process pool runs them from --source, a pool of images "
        "(kubernetes) from --image",
    )
    parser.add_argument(
        "--image",
        default=None,
        help="the image the work pool's jobs run: required for a pool whose jobs run an image "
        "(kubernetes, docker), refused for a process pool",
    )
    parser.add_argument(
        "--source",
        default=None,
        metavar="DIR",
        help="for a process pool: the project checkout its worker runs the flows from, and their "
        "working directory (relative paths are read there; default: the current directory)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the deployments; serve or register nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.work_pool is None and (args.image is not None or args.source is not None):
        parser.error("--image and --source describe a work pool's jobs: they need --work-pool")
    target = None
    if args.work_pool is not None:
        try:
            target = WorkPoolTarget.of(args.work_pool, args.image, args.source)
        except WorkPoolError as e:
            parser.error(str(e))
    dep = build_deployment(args.params, args.repo, args.workdir, by_module=target is not None)
    deployments = [dep]
    if target is not None:
        training = build_training_deployment(args.params, args.repo, args.training_workdir)
        try:
            deployments = [prepare(d, target) for d in (training, dep)]
        except WorkPoolError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    summary = deployment_summary(dep)
    if args.dry_run:
        shown: dict[str, Any] = summary
        if target is not None:
            shown = {
                **target.describe(),
                "deployments": [deployment_summary(d) for d in deployments],
            }
        print(json.dumps(shown, indent=2))
        return 0
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "error: PREFECT_API_URL is not set: a deployment needs a Prefect server that outlives "
            "this process (start one with `prefect server start` and export PREFECT_API_URL="
            "http://127.0.0.1:4200/api)",
            file=sys.stderr,
        )
        return 1
    if target is not None:
        try:
            ids = register_on_work_pool(deployments, target)
        except WorkPoolError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        for d, deployment_id in zip(deployments, ids, strict=True):
            print(
                f"registered {d.flow_name}/{d.name} ({deployment_id}) {target.sentence()}",
                flush=True,
            )
        return 0
    from prefect import serve

    print(f"serving {summary['name']} ({summary['entrypoint']}); Ctrl-C stops it", flush=True)
    serve(dep)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
