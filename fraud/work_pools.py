"""Registering Prefect deployments on a work pool: the rule that `python -m pipelines.deploy` and
`python -m monitoring.deploy` share (here because `monitoring` may not import `pipelines`).

A work pool is of one of two kinds, told apart by its base job template:

* its jobs run an image (`kubernetes`, `docker`, ...: the template has an `image` variable): the
  deployment names its flow by module path (`pipelines.flows.training`), since the image has the
  project installed and knows no file of the registering machine, and `--image` names the image;
* its jobs are processes of the worker's machine (`process`: no `image` variable): the deployment
  names its flow by file in the project checkout (`pipelines/flows.py:training`) and has one pull
  step, `set_working_directory` to that checkout (what `flow.from_source(<dir>, ...)` records).
  Each flow run thus imports the checkout's code and reads its relative parameters (params.yaml,
  the repository ".", runs/...) there, wherever `prefect worker start --pool P --type process`
  was started. Without the pull step, Prefect 3.8's process worker would copy its own working
  directory (the whole checkout, data and venv included) into a temporary one for every run.

The server decides which kind a pool is; without a server (`--dry-run`) the presence of `--image`
says which registration is meant.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.deployments.runner import RunnerDeployment

#: The base job template's variable that makes a pool's jobs run an image.
IMAGE_VARIABLE = "image"


class WorkPoolError(ValueError):
    """The deployments cannot be registered on the pool as asked; the message names the option."""


class WorkPoolNotFoundError(WorkPoolError, LookupError):
    """The Prefect server has no work pool of that name."""


@dataclass(frozen=True)
class WorkPoolTarget:
    """Where deployments go: the pool and either the image its jobs run or, for a process pool,
    the project checkout its worker runs the flows in (absolute)."""

    pool: str
    image: str | None = None
    source: Path | None = None

    @classmethod
    def of(cls, pool: str, image: str | None, source: str | Path | None) -> WorkPoolTarget:
        """The target from the command line: `image` for a pool of images, else `source` (default:
        the current directory) for a process pool. Raises WorkPoolError naming the option."""
        if image is not None:
            if source is not None:
                raise WorkPoolError(
                    f"--source {source}: only for a process pool, whose worker runs the flows "
                    f"from a checkout; with --image {image} the flows run from the image"
                )
            return cls(pool, image=image)
        checkout = Path(source if source is not None else os.getcwd()).resolve()
        if not checkout.is_dir():
            raise WorkPoolError(f"--source {source}: not a directory (the project checkout)")
        return cls(pool, source=checkout)

    def describe(self) -> dict[str, Any]:
        """The target as --dry-run shows it."""
        if self.image is not None:
            return {"work_pool": self.pool, "image": self.image}
        return {"work_pool": self.pool, "source": str(self.source)}

    def sentence(self) -> str:
        """How the pool's jobs run, for the line that reports a registration."""
        if self.image is not None:
            return f"on work pool {self.pool}, image {self.image}"
        return f"on work pool {self.pool}, from the checkout {self.source}"


def run_from_checkout(deployment: RunnerDeployment, source: Path) -> RunnerDeployment:
    """Make a deployment built by module path (`pkg.module.flow`) run from the checkout
    `source`: entrypoint `pkg/module.py:flow` and a `set_working_directory` pull step.

    Raises WorkPoolError when the checkout has no such file (not the project's checkout)."""
    from prefect.runner.storage import LocalStorage

    entrypoint = deployment.entrypoint or ""
    module, _, function = entrypoint.rpartition(".")
    if not module or ":" in entrypoint:
        raise ValueError(f"{deployment.name}: entrypoint {entrypoint!r} is not a module path")
    relative = Path(*module.split(".")).with_suffix(".py")
    if not (source / relative).is_file():
        raise WorkPoolError(
            f"--source {source}: it has no {relative.as_posix()}, so a process worker could not "
            "run the flow from it; run the command in the project's checkout or pass --source"
        )
    deployment.entrypoint = f"{relative.as_posix()}:{function}"
    deployment.storage = LocalStorage(path=str(source))
    return deployment


def prepare(deployment: RunnerDeployment, target: WorkPoolTarget) -> RunnerDeployment:
    """The deployment as `target` runs it: unchanged for an image, from the checkout otherwise."""
    if target.source is None:
        return deployment
    return run_from_checkout(deployment, target.source)


def pool_runs_images(base_job_template: dict[str, Any]) -> bool:
    """Whether a pool with this base job template runs its jobs in an image."""
    variables = base_job_template.get("variables", {}).get("properties", {})
    return IMAGE_VARIABLE in variables


def check_work_pool(target: WorkPoolTarget) -> str:
    """The pool's type, once the Prefect server (PREFECT_API_URL) confirms it can take `target`.

    Raises WorkPoolNotFoundError when it has no such pool, WorkPoolError when the pool runs
    images and no --image was given, or runs processes and one was."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(target.pool)
        except ObjectNotFound:
            raise WorkPoolNotFoundError(
                f"--work-pool {target.pool}: the Prefect server has no work pool of that name; "
                f"create it first (`prefect work-pool create {target.pool} --type process` for "
                "a worker on one machine, or `--type kubernetes --base-job-template FILE`)"
            ) from None
    images = pool_runs_images(pool.base_job_template)
    if images and target.image is None:
        raise WorkPoolError(
            f"--image: work pool {target.pool} is of type {pool.type}, whose flow runs are jobs "
            "of an image: name it (--image NAME:TAG)"
        )
    if not images and target.image is not None:
        raise WorkPoolError(
            f"--image {target.image}: work pool {target.pool} is of type {pool.type}, whose "
            "worker runs the flows as local processes, not in an image: drop --image (the flows "
            "run from --source, by default the current directory)"
        )
    return str(pool.type)


def register_on_work_pool(
    deployments: Sequence[RunnerDeployment], target: WorkPoolTarget
) -> list[UUID]:
    """Create or update each deployment (prepared for `target`) on its pool; their ids.

    Checks the pool first (check_work_pool). Nothing is built or pushed: an image exists already
    (deploy/platform.Dockerfile), a checkout is used where it is. Re-registering updates the
    deployments in place (Prefect identifies one by flow and name)."""
    check_work_pool(target)
    # `apply` rather than `prefect.deploy`: the latter builds images and prints a table.
    # Called from sync code, `apply` returns the id (not a coroutine).
    return [
        cast("UUID", d.apply(work_pool_name=target.pool, image=target.image)) for d in deployments
    ]
