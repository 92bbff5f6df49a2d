"""JSON in and out of the endpoints with bodies, faster than FastAPI's own handling but with its
behaviour: a body is read only when declared JSON (415 otherwise), validated straight from bytes
with FastAPI's 422s; responses serialised once with orjson; and the 422 handler that keeps
non-finite inputs representable."""

from __future__ import annotations

import math
from typing import Any, TypeVar

import orjson
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

_M = TypeVar("_M", bound=BaseModel)


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` or `application/<anything>+json`, any case, parameters allowed (what
    FastAPI reads as JSON). A missing header is not JSON: a browser sends a cross-site POST
    without a preflight only as text/plain, a form, or with no Content-Type at all."""
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def require_json(content_type: str | None) -> None:
    """415 naming the Content-Type received, unless it is JSON."""
    if not is_json_media_type(content_type):
        got = f"got {content_type!r}" if content_type else "got no Content-Type header"
        raise HTTPException(
            415, detail=f"the body must be sent as Content-Type: application/json, {got}"
        )


async def parse_json_body(request: Request, model: type[_M]) -> _M:
    """The JSON body as `model`, validated straight from the bytes by pydantic-core: about
    half of what FastAPI's own body handling costs (decode, then validate the objects). A body
    not declared JSON is refused with 415 before it is read. Errors are FastAPI's: a 422 with
    each error's location under "body"."""
    require_json(request.headers.get("content-type"))
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        ) from None


def json_response(content: Any) -> Response:
    """Serialised once, here; FastAPI passes a Response through without re-validating it
    against `response_model` (which still documents it)."""
    return Response(orjson.dumps(content), media_type="application/json")


async def validation_error_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with field-level details; inputs that JSON cannot carry (NaN, inf) become text."""
    return JSONResponse(status_code=422, content={"detail": _json_safe(exc.errors())})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
