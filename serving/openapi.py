"""The API's documentation: the OpenAPI schema (with the request bodies that the scoring
endpoints parse themselves) and the `/docs` (Swagger UI) and `/redoc` pages, whose scripts
and styles are served from the `fastapi-offline` package so that they work without internet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from fraud.schema import TransactionRecord
from serving.schemas import BatchRequest, Feedback

#: Where the Swagger UI and ReDoc assets are served.
DOCS_ASSETS_URL = "/static/docs"
_DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"

#: The docs pages may load nothing from elsewhere: ReDoc's footer, for one, shows an image from
#: its CDN. Inline scripts and styles are how both pages start; ReDoc's search runs in a worker.
_DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:"
)

#: The bodies that endpoints parse themselves (serving.json_io), so FastAPI does not see them.
_SELF_PARSED_BODIES: tuple[type[BaseModel], ...] = (TransactionRecord, BatchRequest, Feedback)

#: FastAPI documents the 422 of the bodies it validates; these endpoints validate their own,
#: and refuse a body not sent as JSON (serving.json_io).
BODY_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    415: {
        "description": "The body was not sent with Content-Type: application/json",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"detail": {"type": "string"}},
                    "required": ["detail"],
                }
            }
        },
    },
    422: {
        "description": "Validation Error",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    },
}


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` of a route whose required JSON body is `model`, parsed by the route."""
    assert model in _SELF_PARSED_BODIES, f"add {model.__name__} to _SELF_PARSED_BODIES"
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` FastAPI's schema plus the bodies the endpoints parse themselves."""
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = fastapi_openapi().setdefault("components", {}).setdefault("schemas", {})
            for body in _SELF_PARSED_BODIES:
                js = body.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(js.pop("$defs", {}))
                schemas[body.__name__] = js
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI) -> None:
    """`/docs` and `/redoc` on local assets (create the app with `docs_url=None,
    redoc_url=None`); nothing the pages load leaves the server."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=_DOCS_ASSETS_DIR), name="docs-assets")

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        assets = root + DOCS_ASSETS_URL
        page = get_swagger_ui_html(
            openapi_url=root + str(app.openapi_url),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            # Swagger UI would send the schema to validator.swagger.io for its badge.
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = _DOCS_CONTENT_SECURITY_POLICY
        return page

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        assets = root + DOCS_ASSETS_URL
        page = get_redoc_html(
            openapi_url=root + str(app.openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = _DOCS_CONTENT_SECURITY_POLICY
        return page

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
