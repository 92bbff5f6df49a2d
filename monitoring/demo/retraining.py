"""Following a retraining the monitoring flow started: wait for its Prefect flow run, then read
what the gate decided from the registry (the new version's `gate.decision` and `gate.reason`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from fraud.registry import ALIAS_CHALLENGER, ALIAS_CHAMPION, ModelNotFoundError, read_version
from fraud.registry import resolve_version as _resolve

#: Prefect's final state types.
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class RetrainingTimeout(RuntimeError):
    """The flow run did not finish in time."""


@dataclass(frozen=True)
class FlowRunEnd:
    name: str
    state: str  # COMPLETED, FAILED, ...
    message: str
    seconds: float


def wait_for_flow_run(api_url: str, flow_run_id: str, timeout: float) -> FlowRunEnd:
    """Poll the Prefect server until the flow run reaches a final state."""
    t0 = time.monotonic()
    while True:
        r = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=10)
        r.raise_for_status()
        run = r.json()
        state = run.get("state") or {}
        if state.get("type") in FINAL_STATES:
            return FlowRunEnd(
                run.get("name", flow_run_id),
                state["type"],
                state.get("message") or "",
                time.monotonic() - t0,
            )
        if time.monotonic() - t0 > timeout:
            raise RetrainingTimeout(
                f"flow run {run.get('name', flow_run_id)} is still {state.get('type')} after "
                f"{timeout:.0f} s"
            )
        time.sleep(2)


def alias_version(model_name: str, alias: str) -> str | None:
    try:
        return _resolve(model_name, alias=alias)
    except ModelNotFoundError:
        return None


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided about the newest version."""

    version: str
    decision: str  # "champion" or "challenger"
    reason: str
    average_precision: float | None
    train_window: str | None
    test_window: str | None

    @property
    def promoted(self) -> bool:
        return self.decision == ALIAS_CHAMPION


def newest_outcome(model_name: str) -> GateOutcome | None:
    """The gate's decision about the newest version (the higher of @champion and @challenger:
    the register step gives a new version one of them)."""
    versions = [
        v
        for v in (
            alias_version(model_name, ALIAS_CHAMPION),
            alias_version(model_name, ALIAS_CHALLENGER),
        )
        if v is not None
    ]
    if not versions:
        return None
    newest = max(versions, key=int)
    lineage = read_version(model_name, version=newest).lineage
    return GateOutcome(
        version=newest,
        decision=lineage.decision or "unknown",
        reason=lineage.reason or "",
        average_precision=lineage.metrics.get("average_precision"),
        train_window=lineage.train_window,
        test_window=lineage.test_window,
    )
