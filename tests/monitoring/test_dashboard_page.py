"""The monitoring dashboard drawn by the real Evidently UI in Chromium, from a workspace of
several daily windows: every panel present and plotted from the runs' data, and no request
leaving 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest

from monitoring.dashboard import add_snapshot as add_run
from monitoring.dashboard import (
    dashboard_model,
    get_or_create_project,
    open_workspace,
)
from monitoring.report import (
    DRIFTED_INPUT_COLUMNS,
    DRIFTED_INPUT_SHARE,
    ESTIMATED_AVERAGE_PRECISION,
    ESTIMATED_AVERAGE_PRECISION_LOWER,
    ESTIMATED_AVERAGE_PRECISION_UPPER,
    MATURED_AVERAGE_PRECISION,
    MATURED_RECALL,
    build_report,
)
from monitoring.ui import project_url, ui_command, ui_environment

# A real Evidently UI server and a real browser: the integration tier, not `make test-fast`.
pytestmark = pytest.mark.integration

DAYS = 4
#: Line series the dashboard draws from these runs: 1 share + 3 top features (those present) +
#: 4 score statistics + alert rate + score drift + 2 matured + 4 estimate + 3 labelled-row.
LINES = 1 + 3 + 4 + 1 + 1 + 2 + 4 + 3
MARKS = LINES * DAYS
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
COLUMNS = {
    "TX_AMOUNT": ("wasserstein", 0.1),
    "TERMINAL_ID_RISK_7DAY_WINDOW": ("psi", 0.2),
    "amount": ("wasserstein", 0.1),
    "score": ("psi", 0.2),
}


def _window(rng: np.random.Generator, n: int, amount_shift: float) -> pd.DataFrame:
    fraud = rng.random(n) < 0.05
    score = np.where(fraud, rng.beta(5, 2, n), rng.beta(1, 12, n))
    amount = rng.lognormal(3.5 + amount_shift, 0.8, n)
    return pd.DataFrame(
        {
            "amount": amount,
            "score": score,
            "is_alert": score >= 0.5,
            "is_fraud": pd.array(fraud.astype(int), dtype="Int64"),
            "TX_AMOUNT": amount,
            "TERMINAL_ID_RISK_7DAY_WINDOW": rng.beta(1, 30, n) + fraud * 0.2,
        }
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A workspace of DAYS daily windows (amounts drifting from day 3), served by `evidently ui`."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian package chromium): make system-deps")
    pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
    rng = np.random.default_rng(11)
    ws_dir = tmp_path_factory.mktemp("workspace")
    ws = open_workspace(ws_dir)
    project = get_or_create_project(ws)
    reference = _window(rng, 3000, 0.0)
    start = datetime(2018, 8, 8)
    for day in range(DAYS):
        current = _window(rng, 1000, 0.4 if day >= 2 else 0.0)
        ap = 0.75 - 0.1 * max(day - 1, 0)
        snapshot = build_report(
            reference,
            current,
            columns=COLUMNS,
            timestamp=start + timedelta(days=day + 1),
            performance={
                DRIFTED_INPUT_COLUMNS: 2.0 if day >= 2 else 0.0,
                DRIFTED_INPUT_SHARE: 0.5 if day >= 2 else 0.0,
                MATURED_AVERAGE_PRECISION: ap,
                MATURED_RECALL: ap - 0.1,
                ESTIMATED_AVERAGE_PRECISION: ap + 0.02,
                ESTIMATED_AVERAGE_PRECISION_LOWER: ap - 0.05,
                ESTIMATED_AVERAGE_PRECISION_UPPER: ap + 0.08,
            },
        )
        add_run(ws, project, snapshot)
    port = _free_port()
    log = (ws_dir / "ui.log").open("w")
    server = subprocess.Popen(
        ui_command(ws_dir, "127.0.0.1", port),
        env=ui_environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "evidently ui did not start:\n" + (ws_dir / "ui.log").read_text()
                    ) from None
                time.sleep(0.3)
        yield project_url("127.0.0.1", port, project.id)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_dashboard_page_draws_every_panel_from_the_runs_without_leaving_127_0_0_1(
    dashboard: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    titles = [p.title for p in dashboard_model().panels]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})

            def only_this_server(route: Any) -> None:
                url = route.request.url
                if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
                    route.continue_()
                else:
                    outside.append(url)
                    route.abort()

            context.route("**/*", only_this_server)
            page = context.new_page()
            page.goto(dashboard)
            page.get_by_text(titles[0]).first.wait_for(timeout=30_000)
            # MUI X charts draw a mark per point once a panel's series have arrived.
            page.wait_for_function(
                f"document.querySelectorAll('.MuiMarkElement-root').length >= {MARKS}",
                timeout=30_000,
            )
            page.wait_for_function(
                f"document.querySelectorAll('.MuiBarElement-root').length >= {DAYS}",
                timeout=10_000,
            )
            body = page.inner_text("body")
            lines = page.locator(".MuiLineElement-root").count()
            page.screenshot(path=tmp_path / "dashboard.png", full_page=True)
        finally:
            browser.close()
    assert not outside, f"the dashboard requested outside 127.0.0.1: {outside}"
    missing = [t for t in titles if t not in body]
    assert not missing, f"panels not on the page: {missing}"
    # The counter shows the last window's drifted columns (both amounts drift from day 3).
    assert "Drifted input columns (last window)\n2\n" in body
    assert "2018-08-12" in body  # the last window's transaction time, not the run's
    assert lines >= LINES
    assert (tmp_path / "dashboard.png").stat().st_size > 20_000
