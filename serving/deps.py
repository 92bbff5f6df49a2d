"""FastAPI dependencies of the routes: the app's `Runtime`, and the admin token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from serving.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The runtime `create_app` put on the app's state."""
    runtime: Runtime = request.app.state.runtime
    return runtime


#: A route parameter annotated with this receives the app's `Runtime`.
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_admin(
    runtime: RuntimeDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """403 while no FRAUD_ADMIN_TOKEN is set; 401 unless `Authorization: Bearer <that token>`."""
    secret = runtime.settings.admin_token
    token = secret.get_secret_value() if secret else None
    if not token:
        raise HTTPException(403, detail="admin endpoints are disabled: set FRAUD_ADMIN_TOKEN")
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, detail="missing or wrong bearer token")
