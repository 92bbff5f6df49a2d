"""The pure-ASGI layers in front of FastAPI (Starlette's `@app.middleware("http")` costs a task
and a stream per request): the body size limit, and the fast path of `POST /predict`."""

from __future__ import annotations

import orjson
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fraud.schema import TransactionRecord
from serving.json_io import is_json_media_type
from serving.runtime import Runtime
from serving.scoring import score_transactions


class BodyLimit:
    """Refuse bodies above `max_bytes` with 413, whether they declare a Content-Length or are
    chunked (counted as they stream in, never buffered beyond the limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(
            {"detail": f"body larger than {self.max_bytes} bytes"}, status_code=413
        )
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer 413 now; the app sees the body end here, and what it answers
                    # to that truncated body is dropped by `guarded_send`.
                    refused = True
                    await too_large(scope, receive, send)
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


class FastPredict:
    """The hot path: `POST /predict` without a query string, answered here, below the metrics
    and above FastAPI's routing, exception and dependency layers (about a third of a request's
    CPU). It does what the `/predict` route does, with the same functions; anything but the
    happy path (invalid body, oversized or chunked body, a Content-Type that is not JSON) goes
    down to the route unchanged, with the body replayed, so that errors are FastAPI's own; an
    HTTPException (409, 503) is answered as FastAPI's handler would."""

    def __init__(self, app: ASGIApp, runtime: Runtime, route: BaseRoute) -> None:
        self.app = app
        self.rt = runtime
        self.route = route  # the `/predict` route: the metrics label it like the route's own
        self.limit = runtime.settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != "/predict"
            or scope["method"] != "POST"
            or scope["query_string"]
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if not length.isdigit() or int(length) > self.limit or not is_json_media_type(content_type):
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        scope["route"] = self.route  # for the metrics' endpoint label
        try:
            tx = TransactionRecord.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body), send)
            return
        try:
            pred = (
                await score_transactions(self.rt, [tx], self.rt.settings.contributions_by_default)
            )[0]
            status, content = 200, pred
        except HTTPException as e:
            status, content = e.status_code, {"detail": e.detail}
        payload = orjson.dumps(content)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _replay(body: bytes) -> Receive:
    """A `receive` that hands over `body` (already read) once, then a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
