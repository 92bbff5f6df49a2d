"""The optional components of k8s/ rendered onto the overlays, as a user applies them: the canary
on @challenger (k8s/components/canary), the Grafana dashboard (k8s/components/grafana-dashboard,
from k8s/observability/grafana/fraud-api.json) and the Prometheus operator's objects
(k8s/components/prometheus-operator).

Each render is a temporary kustomization with an overlay as its resource and the components
under `components:`; everything but the operator's custom resources is validated with
`kubernetes-validate --strict` and passes the checks every pod of test_manifests.py passes. The
dashboard's and the alert rules' PromQL may only name metrics that a real API exports: the app
(serving.app.create_app, with the pipeline's champion) is scraped after real requests, so a
renamed metric or label fails here. The operator's objects are checked against the fields of
its API (monitoring.coreos.com/v1) that they use.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.k8s.test_manifests import (
    K8S,
    Obj,
    dangling_scalers_and_budgets,
    effective_env,
    kubectl,
    missing_probes,
    missing_resources,
    named,
    of_kind,
    security_violations,
    selector_mismatches,
    selects,
    service_port_mismatches,
    unpinned_images,
    unresolved_references,
    validate,
)

pytestmark = pytest.mark.integration

COMPONENTS = K8S / "components"
DASHBOARD = K8S / "observability" / "grafana" / "fraud-api.json"
ALL_COMPONENTS = ("canary", "grafana-dashboard", "prometheus-operator")
#: Kinds of the Prometheus operator's CRDs: kubernetes-validate has no schema for them.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
#: Labels Prometheus puts on every series of a scraped target, not the API: its kubernetes
#: service discovery (namespace, pod, container, service), the scrape (job, instance) and the
#: ServiceMonitor's podTargetLabels (track).
TARGET_LABELS = {"namespace", "pod", "container", "service", "job", "instance", "track"}
#: Series Prometheus itself writes for each target.
PROMETHEUS_SERIES = {"up"}


# --- rendering --------------------------------------------------------------------------------


@cache
def rendered_with(overlay: str, components: tuple[str, ...]) -> str:
    """`kubectl kustomize` of a temporary kustomization: the overlay plus the components."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="k8s-components-") as tmp:
        here = Path(tmp)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            # Needed: the overlay's `namespace:` does not reach objects that the components
            # add at this layer, and kustomize links the canary to the overlay's hashed
            # ConfigMap name only within one namespace.
            "namespace": f"fraud-{overlay}",
            # kustomize takes relative paths only.
            "resources": [os.path.relpath(K8S / "overlays" / overlay, here)],
            "components": [os.path.relpath(COMPONENTS / c, here) for c in components],
        }
        (here / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        proc = subprocess.run(
            [kubectl(), "kustomize", str(here)], capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 0, f"{overlay} + {components}:\n{proc.stderr}"
    return proc.stdout


def render_with(overlay: str, *components: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all(rendered_with(overlay, tuple(components))) if d]


def render_dir(path: Path) -> list[Obj]:
    proc = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize {path}:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def template_labels(o: Obj) -> dict[str, str]:
    return dict(o["spec"]["template"]["metadata"].get("labels", {}))


def stable_and_canary(objs: list[Obj]) -> tuple[Obj, Obj]:
    stable = named(objs, "Deployment", "fraud-api")
    canary = named(objs, "Deployment", "fraud-api-canary")
    assert stable is not None and canary is not None
    return stable, canary


# --- checks that return their problems ------------------------------------------------------


def overlapping_deployment_selectors(objs: list[Obj]) -> list[str]:
    """Deployments whose selector also selects another Deployment's pods: Kubernetes accepts
    them, and their controllers then fight over each other's pods."""
    deployments = of_kind(objs, "Deployment")
    return [
        f"Deployment/{a['metadata']['name']}'s selector selects the pods of "
        f"Deployment/{b['metadata']['name']}"
        for a in deployments
        for b in deployments
        if a is not b and selects(a["spec"]["selector"]["matchLabels"], template_labels(b))
    ]


def policies_missing_the_canary(objs: list[Obj]) -> list[str]:
    """NetworkPolicies that admit the stable pods but not the canary (the default deny would
    cut the canary off from its clients, MLflow, PostgreSQL or Redis)."""
    stable, canary = stable_and_canary(objs)
    problems = []
    for p in of_kind(objs, "NetworkPolicy"):
        sel = p["spec"]["podSelector"].get("matchLabels", {})
        if (
            sel
            and selects(sel, template_labels(stable))
            and not selects(sel, template_labels(canary))
        ):
            problems.append(f"NetworkPolicy/{p['metadata']['name']} does not select the canary")
    return problems


def generic_problems(objs: list[Obj]) -> list[str]:
    """test_manifests.py's checks of every pod, Service, HPA, PDB and reference."""
    checks = (
        missing_probes,
        missing_resources,
        unpinned_images,
        selector_mismatches,
        service_port_mismatches,
        dangling_scalers_and_budgets,
        unresolved_references,
        security_violations,
    )
    return [problem for check in checks for problem in check(objs)]


# --- the canary -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_with_every_component_passes_strict_validation_and_the_pod_checks(
    overlay: str, tmp_path: Path
) -> None:
    objs = render_with(overlay, *ALL_COMPONENTS)
    kinds = {o["kind"] for o in objs}
    assert kinds >= OPERATOR_KINDS
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(yaml.safe_dump_all([o for o in objs if o["kind"] not in OPERATOR_KINDS]))
    proc = validate(out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert generic_problems(objs) == []
    # Every object lands in the overlay's namespace (the Namespace object itself has none).
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {
        f"fraud-{overlay}"
    }


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_canary_and_stable_deployments_select_only_their_own_pods(overlay: str) -> None:
    objs = render_with(overlay, "canary")
    assert overlapping_deployment_selectors(objs) == []
    stable, canary = stable_and_canary(objs)
    assert template_labels(stable)["track"] == "stable"
    assert template_labels(canary)["track"] == "canary"
    # The stable selector is the base's, untouched: a selector change cannot be applied to an
    # existing Deployment (immutable field).
    plain = named(render_with(overlay), "Deployment", "fraud-api")
    assert plain is not None
    assert stable["spec"]["selector"] == plain["spec"]["selector"]


def test_the_overlap_check_catches_a_canary_labelled_like_the_stable_pods() -> None:
    objs = copy.deepcopy(render_with("prod", "canary"))
    _, canary = stable_and_canary(objs)
    for labels in (
        canary["spec"]["selector"]["matchLabels"],
        canary["spec"]["template"]["metadata"]["labels"],
    ):
        labels["app.kubernetes.io/component"] = "prediction-api"
    assert overlapping_deployment_selectors(objs) == [
        "Deployment/fraud-api's selector selects the pods of Deployment/fraud-api-canary"
    ]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_service_sends_traffic_to_both_tracks_and_only_stable_scales(overlay: str) -> None:
    objs = render_with(overlay, "canary")
    stable, canary = stable_and_canary(objs)
    service = named(objs, "Service", "fraud-api")
    assert service is not None
    assert selects(service["spec"]["selector"], template_labels(stable))
    assert selects(service["spec"]["selector"], template_labels(canary))
    # A fixed single canary pod: its traffic share is 1 / (1 + ready stable pods).
    assert canary["spec"]["replicas"] == 1
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objs, "HorizontalPodAutoscaler")}
    assert scaled == {"fraud-api"}
    budgets = [p["spec"]["selector"]["matchLabels"] for p in of_kind(objs, "PodDisruptionBudget")]
    assert all(not selects(b, template_labels(canary)) for b in budgets)
    assert policies_missing_the_canary(objs) == []


def test_the_policy_check_catches_a_policy_that_leaves_the_canary_out() -> None:
    objs = copy.deepcopy(render_with("prod", "canary"))
    egress = named(objs, "NetworkPolicy", "fraud-api-egress")
    assert egress is not None
    egress["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] = "prediction-api"
    assert policies_missing_the_canary(objs) == [
        "NetworkPolicy/fraud-api-egress does not select the canary"
    ]


def test_the_canary_runs_the_stable_pod_spec_on_challenger_with_the_same_backends() -> None:
    """Over prod (Redis feature state, PostgreSQL log): the canary's pod spec is the stable
    one's, prod's Secret-backed env included, except the alias and the topology spread; both
    write the same prediction log, which records each prediction's model version."""
    objs = render_with("prod", "canary")
    stable, canary = stable_and_canary(objs)
    stable_pod = copy.deepcopy(stable["spec"]["template"]["spec"])
    canary_pod = copy.deepcopy(canary["spec"]["template"]["spec"])
    assert "topologySpreadConstraints" not in canary_pod
    del stable_pod["topologySpreadConstraints"]
    canary_api = next(c for c in canary_pod["containers"] if c["name"] == "api")
    alias = {"name": "FRAUD_MODEL_ALIAS", "value": "challenger"}
    assert alias in canary_api["env"]
    canary_api["env"].remove(alias)
    assert canary_pod == stable_pod  # env in the same order, prod's Secret references included
    assert (
        canary["spec"]["template"]["metadata"]["annotations"]
        == stable["spec"]["template"]["metadata"]["annotations"]
    )
    stable_env, canary_env = (
        effective_env(
            objs, next(c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "api")
        )
        for d in (stable, canary)
    )
    assert stable_env["FRAUD_MODEL_ALIAS"] == ("value", "champion")
    assert canary_env["FRAUD_MODEL_ALIAS"] == ("value", "challenger")
    for shared in ("FRAUD_PREDICTION_LOG", "FRAUD_FEATURE_STORE", "MLFLOW_TRACKING_URI"):
        assert canary_env[shared] == stable_env[shared], shared
    assert canary_env["FRAUD_FEATURE_STORE"][0] == "secret"  # Redis, shared: not per pod


def test_the_canary_needs_an_overlay_to_copy_from() -> None:
    """Rendered alone it has no Deployment fraud-api to copy: kustomize refuses (rather than
    rendering a canary without a pod spec)."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(COMPONENTS / "canary")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "fraud-api" in proc.stderr


# --- the Grafana dashboard --------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(d: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])  # inside collapsed rows


def dashboard_queries(d: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the panels, and of the variables' label_values()."""
    exprs = [t["expr"] for p in panels(d) for t in p.get("targets", [])]
    for var in d["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert m, f"variable {var['name']}: {query}"
            exprs.append(f"sum by ({m[2]}) ({m[1]})")  # the same metric and label, as PromQL
    return exprs


def test_dashboard_is_a_current_grafana_dashboard_on_a_chosen_prometheus_and_namespace() -> None:
    d = dashboard()
    assert d["uid"] == "fraud-api" and d["schemaVersion"] >= 39  # Grafana 11 and newer
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["type"] == "query"
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids))
    for p in panels(d):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert 'namespace=~"$namespace"' in t["expr"], (p["title"], t["expr"])
    # What the dashboard is for: each of these is drawn.
    titles = " | ".join(p["title"].lower() for p in panels(d))
    for wanted in (
        "request rate by route and status",
        "error share",
        "p50, p95, p99",
        "alert rate",
        "score distribution",
        "model version per pod",
        "pods up",
    ):
        assert wanted in titles, wanted
    heatmap = next(p for p in panels(d) if p["type"] == "heatmap")
    assert heatmap["targets"][0]["format"] == "heatmap"


def test_grafana_component_ships_the_dashboard_as_a_sidecar_configmap() -> None:
    objs = render_with("dev", "grafana-dashboard")
    cms = [o for o in of_kind(objs, "ConfigMap") if "fraud-api.json" in o.get("data", {})]
    assert len(cms) == 1
    cm = cms[0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["name"] == "fraud-api-dashboard"  # no hash: see its kustomization
    assert cm["metadata"]["namespace"] == "fraud-dev"
    assert json.loads(cm["data"]["fraud-api.json"]) == dashboard()
    assert render_dir(K8S / "observability" / "grafana") == [
        {**cm, "metadata": {k: v for k, v in cm["metadata"].items() if k != "namespace"}}
    ]


# --- the Prometheus operator's objects ------------------------------------------------------

#: The fields of monitoring.coreos.com/v1 these objects may use, from the operator's API
#: reference (checked against its CRDs' openAPIV3Schema when written): a misspelt field is
#: pruned silently by the API server, so it is refused here.
SERVICE_MONITOR_FIELDS: dict[str, Any] = {
    "selector": {"matchLabels": None, "matchExpressions": None},
    "namespaceSelector": {"any": None, "matchNames": None},
    "jobLabel": None,
    "podTargetLabels": None,
    "targetLabels": None,
    "endpoints": [
        {
            "port": None,
            "path": None,
            "scheme": None,
            "interval": None,
            "scrapeTimeout": None,
            "honorLabels": None,
            "relabelings": None,
            "metricRelabelings": None,
        }
    ],
}
RULE_FIELDS = {"alert", "record", "expr", "for", "labels", "annotations", "keep_firing_for"}
DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def unknown_fields(obj: Any, allowed: Any, where: str = "spec") -> list[str]:
    if allowed is None:
        return []
    if isinstance(allowed, list):
        return [
            p
            for i, item in enumerate(obj)
            for p in unknown_fields(item, allowed[0], f"{where}[{i}]")
        ]
    problems = [f"{where}.{k}" for k in obj if k not in allowed]
    return problems + [
        p
        for k, v in obj.items()
        if k in allowed
        for p in unknown_fields(v, allowed[k], f"{where}.{k}")
    ]


def rule_problems(rule_obj: Obj) -> list[str]:
    problems = []
    for g in rule_obj["spec"]["groups"]:
        if set(g) - {"name", "interval", "rules"} or not g.get("name"):
            problems.append(f"group {g.get('name')}: fields {sorted(g)}")
        if "interval" in g and not DURATION.fullmatch(g["interval"]):
            problems.append(f"group {g['name']}: interval {g['interval']!r}")
        for r in g["rules"]:
            name = r.get("alert") or r.get("record")
            if set(r) - RULE_FIELDS or ("alert" in r) == ("record" in r):
                problems.append(f"rule {name}: fields {sorted(r)}")
            if not isinstance(r.get("expr"), str):
                problems.append(f"rule {name}: expr is not a string")
            if "for" in r and not DURATION.fullmatch(r["for"]):
                problems.append(f"rule {name}: for {r['for']!r}")
            if "alert" in r:
                if r.get("labels", {}).get("severity") not in {"critical", "warning"}:
                    problems.append(f"rule {name}: severity")
                if not {"summary", "description"} <= set(r.get("annotations", {})):
                    problems.append(f"rule {name}: summary and description")
    return problems


def operator_objects(objs: list[Obj]) -> tuple[Obj, Obj]:
    sm = named(objs, "ServiceMonitor", "fraud-api")
    rule = named(objs, "PrometheusRule", "fraud-api")
    assert sm is not None and rule is not None
    return sm, rule


def test_servicemonitor_scrapes_the_apis_service_every_30s_with_the_apis_own_labels() -> None:
    objs = render_with("prod", "canary", "prometheus-operator")
    sm, _ = operator_objects(objs)
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert unknown_fields(sm["spec"], SERVICE_MONITOR_FIELDS) == []
    service = named(objs, "Service", "fraud-api")
    assert service is not None
    assert selects(sm["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "30s")
    # The operator's own target label `endpoint` would rename the API's (see the object).
    assert endpoint["honorLabels"] is True
    stable, canary = stable_and_canary(objs)
    assert "track" in sm["spec"]["podTargetLabels"]
    assert {template_labels(stable)["track"], template_labels(canary)["track"]} == {
        "stable",
        "canary",
    }


def test_prometheus_rule_alerts_on_errors_latency_missing_model_and_alert_rate() -> None:
    _, rule = operator_objects(render_dir(COMPONENTS / "prometheus-operator"))
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    assert rule_problems(rule) == []
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert set(alerts) == {
        "FraudApiDown",
        "FraudApiNoModelLoaded",
        "FraudApiHighErrorRate",
        "FraudApiPredictLatencyAboveSLO",
        "FraudApiAlertRateOffBaseline",
    }
    assert "> 0.01" in alerts["FraudApiHighErrorRate"]["expr"]
    assert alerts["FraudApiHighErrorRate"]["for"] == "5m"
    assert "> 0.05" in alerts["FraudApiPredictLatencyAboveSLO"]["expr"]  # the 50 ms SLO


def test_the_operator_checks_catch_a_misspelt_field_and_a_bad_rule() -> None:
    sm, rule = copy.deepcopy(operator_objects(render_dir(COMPONENTS / "prometheus-operator")))
    sm["spec"]["endpoints"][0]["honorlabels"] = sm["spec"]["endpoints"][0].pop("honorLabels")
    assert unknown_fields(sm["spec"], SERVICE_MONITOR_FIELDS) == ["spec.endpoints[0].honorlabels"]
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    del rule["spec"]["groups"][1]["rules"][0]["labels"]
    assert len(rule_problems(rule)) == 2


# --- every metric and label the PromQL names, in a real API's scrape ---------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
_KEYWORDS |= {"unless", "offset", "bool", "inf", "nan", "atan2"}


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses. A small reader, enough for the queries
    here: it drops strings, Grafana variables, ranges and function names."""
    s = re.sub(r"\$\{?\w+\}?", "", expr)
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", s):
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", re.sub(r'"[^"]*"', "", matchers)))
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", s
    ):
        labels |= {x.strip() for x in clause.split(",") if x.strip()}
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    metrics = {
        m.group(0)
        for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*(?!\w)(?!\s*\()", s)
        if m.group(0) not in _KEYWORDS
    }
    return metrics, labels


def test_promql_reader_finds_metrics_and_labels() -> None:
    metrics, labels = promql_names(
        "histogram_quantile(0.99, sum by (le, track) (rate(fraud_api_request_seconds_bucket"
        '{namespace=~"$namespace", endpoint="/predict"}[$__rate_interval]))) > 0.05 '
        "and on (namespace) up == 1 unless absent(x_total offset 1h)"
    )
    assert metrics == {"fraud_api_request_seconds_bucket", "up", "x_total"}
    assert labels == {"le", "track", "namespace", "endpoint"}


@pytest.fixture(scope="module")
def scrape(pipeline_repo: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Sample name -> label names, from GET /metrics of the real app serving the pipeline's
    champion, after requests on each route family (a prediction, a batch, a 4xx, a 404)."""
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from serving.app import create_app
    from serving.settings import ServingSettings
    from tests.serving.conftest import TransactionFactory, copy_registry, mlflow_tracking_uri

    base = tmp_path_factory.mktemp("scrape")
    uri = copy_registry(pipeline_repo.tracking_uri, base / "registry")
    settings = ServingSettings(
        model_cache_dir=base / "model-cache",
        prediction_log=str(base / "predictions.sqlite"),
        reload_poll_seconds=0,
    )
    make_tx = TransactionFactory(
        pd.read_parquet(pipeline_repo.path / "data/raw/transactions.parquet")
    )
    with mlflow_tracking_uri(uri), TestClient(create_app(settings)) as client:
        assert client.get("/ready").status_code == 200
        assert client.post("/predict", json=make_tx()).status_code == 200
        batch = {"transactions": [make_tx() for _ in range(20)]}
        assert client.post("/predict/batch", json=batch).status_code == 200
        assert client.post("/predict", json={"TX_AMOUNT": -1}).status_code == 422
        assert client.get("/no-such-route").status_code == 404
        text = client.get("/metrics").text
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def unknown_names(exprs: list[str], scrape: dict[str, set[str]], recorded: set[str]) -> list[str]:
    problems = []
    exported_labels = set().union(*scrape.values())
    for expr in exprs:
        metrics, labels = promql_names(expr)
        for m in metrics - set(scrape) - PROMETHEUS_SERIES - recorded:
            problems.append(f"metric {m} (in {expr!r}) is not exported")
        for label in labels - exported_labels - TARGET_LABELS:
            problems.append(f"label {label} (in {expr!r}) is on no exported series")
    return problems


def rule_expressions() -> tuple[list[str], set[str]]:
    _, rule = operator_objects(render_dir(COMPONENTS / "prometheus-operator"))
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    return [r["expr"] for r in rules], {r["record"] for r in rules if "record" in r}


def test_every_metric_and_label_of_the_dashboard_is_exported_by_the_api(
    scrape: dict[str, set[str]],
) -> None:
    exprs = dashboard_queries(dashboard())
    assert len(exprs) >= 15
    assert unknown_names(exprs, scrape, set()) == []
    # The four families the API exports are all on the dashboard.
    used = set().union(*(promql_names(e)[0] for e in exprs))
    for family in ("fraud_api_requests_total", "fraud_api_request_seconds_bucket"):
        assert family in used
    assert {"fraud_api_score_bucket", "fraud_api_model_version"} <= used
    # The alert rate: the API's decisions at each model's own threshold, not a score bucket.
    assert {"fraud_api_alerts_total", "fraud_api_predictions_total"} <= used


def test_every_metric_and_label_of_the_alert_rules_is_exported_by_the_api(
    scrape: dict[str, set[str]],
) -> None:
    exprs, recorded = rule_expressions()
    assert unknown_names(exprs, scrape, recorded) == []
    assert any("fraud_api_alerts_total" in e for e in exprs)


def test_a_renamed_metric_or_label_is_reported(scrape: dict[str, set[str]]) -> None:
    exprs = dashboard_queries(dashboard())
    renamed = [e.replace("fraud_api_score_bucket", "fraud_api_scores_bucket") for e in exprs]
    problems = unknown_names(renamed, scrape, set())
    assert problems and all(p.startswith("metric fraud_api_scores_bucket ") for p in problems)
    relabelled = [e.replace("by (endpoint, status)", "by (route, status)") for e in exprs]
    [problem] = unknown_names(relabelled, scrape, set())
    assert problem.startswith("label route ")
    # And in the alert rules: a recorded series is known only by the rule that records it.
    exprs, _ = rule_expressions()
    [problem] = unknown_names(
        [e for e in exprs if "fraud_api_alert_share" in e][-1:], scrape, set()
    )
    assert problem.startswith("metric namespace:fraud_api_alert_share:rate1h ")
