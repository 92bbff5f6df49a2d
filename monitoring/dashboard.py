"""The Evidently workspace of the monitoring runs and its dashboard, defined in code.

`open_workspace` opens (or creates) a local workspace directory; `get_or_create_project` finds
the project by name or creates it, and writes the dashboard below; `add_snapshot` adds one
window's report (`monitoring.report.build_report`) as a run, dated by the snapshot's timestamp.

The dashboard is declared whole and saved over the stored one every time, with panel ids
derived from the titles, so re-running adds no duplicate panels. (Evidently 0.7.23's
`add_panel(panel, tab=...)` on a tab that already exists lists the panel in the tab twice.)
Panels edited in the UI are replaced on the next run: the code is the dashboard's definition.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from evidently.core.report import Snapshot
from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel, PanelMetric
from evidently.sdk.panels import bar_plot_panel, counter_panel, line_plot_panel
from evidently.ui.workspace import Project, SnapshotRef, Workspace

from monitoring.frames import ALERT, AMOUNT, SCORE
from monitoring.report import (
    DRIFTED_INPUT_COLUMNS,
    DRIFTED_INPUT_SHARE,
    ESTIMATED_AVERAGE_PRECISION,
    ESTIMATED_AVERAGE_PRECISION_LOWER,
    ESTIMATED_AVERAGE_PRECISION_UPPER,
    MATURED_AVERAGE_PRECISION,
    MATURED_RECALL,
    SCORE_QUANTILES,
)

PROJECT_NAME = "fraud-detector monitoring"
PROJECT_DESCRIPTION = "Drift, predictions and performance of the fraud-detector model, per window"
#: Features whose drift score is drawn over time when the caller names none (the amount and
#: the strongest of the terminal-risk and customer-history features).
DEFAULT_TOP_FEATURES = (
    "TX_AMOUNT",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_FRAUD_28DAY_WINDOW",
    "CUSTOMER_ID_AMOUNT_ZSCORE_30DAY",
    AMOUNT,
)
# Evidently's metric type names (the dashboard's series select on them).
_DRIFT = "ValueDrift"
_MEAN = "MeanValue"
_QUANTILE = "QuantileValue"
_LABELLED = "LabelledRowsQuality"
_VALUE = "FraudMonitoringValue"
_PANEL_NAMESPACE = uuid.UUID("6f1d3c52-4a0e-4c59-9a43-0d1f6a1e7b21")


class DashboardError(RuntimeError):
    """The workspace cannot hold the monitoring project as asked; says which and why."""


#: Workspaces this process opened, by directory. Evidently's local workspace reads every
#: snapshot when it opens (measured: 0.14 s each, 5.8 s with 42), so a process that adds one
#: per day (a replay, the drift demo) would spend time quadratic in the days; it opens each
#: directory once. Adding only appends files, so the open workspace stays right for adding.
_OPENED: dict[Path, Workspace] = {}


def _still_there(ws: Workspace, directory: Path) -> bool:
    """Whether every project the open workspace knows still has its folder (a directory
    removed and made again is another workspace)."""
    return all((directory / str(p.id)).is_dir() for p in ws.list_projects())


def open_workspace(path: str | Path) -> Workspace:
    """The local Evidently workspace at `path`, created if missing (read once per process)."""
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise DashboardError(f"workspace: {directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    cached = _OPENED.get(key)
    if cached is None or not _still_there(cached, directory):
        cached = _OPENED[key] = Workspace(str(directory))
    return cached


def _value(name: str, legend: str) -> PanelMetric:
    return PanelMetric(metric=_VALUE, metric_labels={"name": name}, legend=legend)


def dashboard_tabs(
    top_features: Sequence[str] = DEFAULT_TOP_FEATURES,
) -> dict[str, list[DashboardPanelPlot]]:
    """The dashboard's tabs and their panels, in order."""
    drift = [
        line_plot_panel(
            "Share of drifted input columns",
            [_value(DRIFTED_INPUT_SHARE, "share")],
            description="Each window's inputs, each with the method and threshold chosen for it, "
            "as the verdict judged them",
            size="half",
        ),
        counter_panel(
            "Drifted input columns (last window)",
            [_value(DRIFTED_INPUT_COLUMNS, "count")],
            size="half",
        ),
        line_plot_panel(
            "Drift score of the top features",
            [
                PanelMetric(metric=_DRIFT, metric_labels={"column": c}, legend=c)
                for c in top_features
            ],
            description="Each column's own statistic (compare each with its threshold)",
        ),
        bar_plot_panel(
            "Drift score per column",
            [PanelMetric(metric=_DRIFT)],
            description="Every monitored column, every window",
        ),
    ]
    predictions = [
        line_plot_panel(
            "Score distribution",
            [PanelMetric(metric=_MEAN, metric_labels={"column": SCORE}, legend="mean")]
            + [
                PanelMetric(
                    metric=_QUANTILE,
                    metric_labels={"column": SCORE, "quantile": str(q)},
                    legend=f"quantile {q}",
                )
                for q in SCORE_QUANTILES
            ],
            size="half",
        ),
        line_plot_panel(
            "Alert rate",
            [PanelMetric(metric=_MEAN, metric_labels={"column": ALERT}, legend="alert rate")],
            description="Share of the window's transactions at or above the threshold",
            size="half",
        ),
        line_plot_panel(
            "Score drift",
            [PanelMetric(metric=_DRIFT, metric_labels={"column": SCORE}, legend="score drift")],
        ),
    ]
    performance = [
        line_plot_panel(
            "Average precision and recall on matured cohorts",
            [
                _value(MATURED_AVERAGE_PRECISION, "average precision"),
                _value(MATURED_RECALL, "recall at the threshold"),
            ],
            description="Cohorts whose labels have matured",
            size="half",
        ),
        line_plot_panel(
            "Label-free estimate of average precision",
            [
                _value(ESTIMATED_AVERAGE_PRECISION, "estimate"),
                _value(ESTIMATED_AVERAGE_PRECISION_LOWER, "lower bound"),
                _value(ESTIMATED_AVERAGE_PRECISION_UPPER, "upper bound"),
                _value(MATURED_AVERAGE_PRECISION, "realised (matured)"),
            ],
            description="Recent cohorts, from the scores alone, with its uncertainty",
            size="half",
        ),
        line_plot_panel(
            "Quality on the window's labelled rows",
            [
                PanelMetric(metric=_LABELLED, metric_labels={"measure": m}, legend=m)
                for m in ("average_precision", "recall", "precision")
            ],
            description="Only the labels known when the window was checked",
        ),
    ]
    return {"Drift": drift, "Predictions": predictions, "Performance": performance}


def dashboard_model(top_features: Sequence[str] = DEFAULT_TOP_FEATURES) -> DashboardModel:
    """The whole dashboard, with ids that depend only on tab and panel titles."""
    tabs: list[DashboardTabModel] = []
    panels: list[DashboardPanelPlot] = []
    for title, tab_panels in dashboard_tabs(top_features).items():
        ids = []
        for panel in tab_panels:
            panel.id = uuid.uuid5(_PANEL_NAMESPACE, f"{title}/{panel.title}")
            ids.append(panel.id)
            panels.append(panel)
        tabs.append(
            DashboardTabModel(id=uuid.uuid5(_PANEL_NAMESPACE, title), title=title, panels=ids)
        )
    return DashboardModel(tabs=tabs, panels=panels)


def get_or_create_project(
    ws: Workspace,
    name: str = PROJECT_NAME,
    *,
    top_features: Sequence[str] = DEFAULT_TOP_FEATURES,
) -> Project:
    """The project called `name` (created if missing), its dashboard set to `dashboard_model`."""
    if not name.strip():
        raise DashboardError("project name: empty")
    found = ws.search_project(name)
    if len(found) > 1:
        raise DashboardError(f"project name: {len(found)} projects are called {name!r}")
    project = found[0] if found else ws.create_project(name, description=PROJECT_DESCRIPTION)
    ws.save_dashboard(project.id, dashboard_model(top_features))
    return project


def add_snapshot(ws: Workspace, project: Project, snapshot: Snapshot) -> SnapshotRef:
    """Add one window's report to the project, without its data (the metrics only)."""
    return ws.add_run(project.id, snapshot, include_data=False)
