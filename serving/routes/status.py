"""What the service says about itself: liveness, readiness, the serving model's lineage and
the Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from serving.deps import RuntimeDep

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(response: Response, rt: RuntimeDep) -> dict[str, Any]:
    """Readiness: a model and its feature state are loaded, and the backends a prediction
    needs answer (the shared feature state; the prediction log, re-checked after a failed
    write). 503 with the reasons otherwise."""
    reasons = await rt.not_ready_because()
    if reasons or rt.model is None:
        response.status_code = 503
        return {"ready": False, "reason": "; ".join(reasons)}
    return {"ready": True, "model_version": rt.model.version, "source": rt.model.source}


@router.get("/model")
async def model_info(rt: RuntimeDep) -> dict[str, Any]:
    """The serving model's lineage: version, alias, run, commit, data hash, metrics, reason."""
    model, _ = rt.require_model()
    return {
        "name": model.name,
        "version": model.version,
        "alias": model.alias,
        "run_id": model.run_id,
        "source": model.source,
        "threshold": model.threshold,
        "features": model.features,
        **model.lineage,
    }


@router.get("/metrics")
async def prometheus_metrics(rt: RuntimeDep) -> Response:
    """Prometheus metrics."""
    return Response(rt.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
