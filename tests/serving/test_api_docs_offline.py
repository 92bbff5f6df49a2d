"""`/docs` (Swagger UI) and `/redoc` work on a machine without internet: their scripts, styles
and favicon come from the service itself, and a real browser draws the API's operations from
them without a request leaving 127.0.0.1."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import ServingSettings

#: What only exists once each page has rendered the schema: the `POST /predict` operation.
RENDERED = {
    "docs": "#operations-default-predict_predict_post",
    "redoc": '[data-section-id="operation/predict_predict_post"]',
}
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    # Chromium's own calls out (updates, safe browsing, ...): this test counts every request.
    "--disable-background-networking",
    "--disable-component-update",
]


@pytest.fixture(scope="module")
def docs_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The app without a model (the docs need none) and without entering its lifespan."""
    tmp = tmp_path_factory.mktemp("docs")
    settings = ServingSettings(
        prediction_log=str(tmp / "predictions.sqlite"), model_cache_dir=tmp / "cache"
    )
    yield TestClient(create_app(settings))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_service(docs_client: TestClient, page: str) -> None:
    r = docs_client.get(page)
    assert r.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
    urls += re.findall(r"""url: ?["']([^"']+)["']""", r.text)
    assert urls, r.text
    assert not [u for u in urls if urlsplit(u).netloc], f"{page} loads from elsewhere: {urls}"
    assert "https://" not in r.text, f"{page} names an outside URL:\n{r.text}"
    for url in urls:
        asset = docs_client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_forbid_the_browser_to_load_anything_from_elsewhere(
    docs_client: TestClient, page: str
) -> None:
    # ReDoc's footer shows an image from its CDN whatever it is told: the policy stops it.
    policy = docs_client.get(page).headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"


def test_swagger_ui_does_not_send_the_schema_to_a_validator(docs_client: TestClient) -> None:
    assert '"validatorUrl": null' in docs_client.get("/docs").text


def _browser() -> Any:
    """Playwright's sync API, or a skip naming what is missing (CI installs both)."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian package chromium): make system-deps")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed: pip install -e '.[dev]'")
    return sync_playwright


@pytest.mark.parametrize("page", ["docs", "redoc"])
def test_docs_page_draws_the_api_in_chromium_without_leaving_127_0_0_1(
    live_server, tmp_path: Path, page: str
) -> None:
    sync_playwright = _browser()
    requested: list[str] = []
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})

            def only_this_server(route: Any) -> None:
                url = route.request.url
                requested.append(url)
                if urlsplit(url).hostname == "127.0.0.1" or url.startswith("data:"):
                    route.continue_()
                else:
                    outside.append(url)
                    route.abort()

            context.route("**/*", only_this_server)
            tab = context.new_page()
            tab.goto(f"{live_server.url}/{page}")
            operation = tab.locator(RENDERED[page]).first
            operation.wait_for(state="visible", timeout=30_000)
            assert "/predict" in operation.inner_text()
            tab.screenshot(path=tmp_path / f"{page}.png", full_page=False)
        finally:
            browser.close()
    assert not outside, f"/{page} requested outside 127.0.0.1: {outside}"
    assert any(url.endswith("/openapi.json") for url in requested), requested
    assert (tmp_path / f"{page}.png").stat().st_size > 10_000
