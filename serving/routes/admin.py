"""`/admin/*`: operations behind the bearer token (FRAUD_ADMIN_TOKEN)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException

from serving.degradation import RegistryUnavailableError
from serving.deps import RuntimeDep, require_admin
from serving.model_store import ModelUnavailableError

router = APIRouter(dependencies=[Depends(require_admin)])


@router.post("/admin/reload")
async def admin_reload(rt: RuntimeDep) -> dict[str, Any]:
    """Reload the model from the registry alias without dropping requests."""
    try:
        return await rt.reload_if_changed()
    except (ModelUnavailableError, RegistryUnavailableError) as e:
        raise HTTPException(503, detail=str(e)) from e
