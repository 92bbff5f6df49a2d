"""The score histogram observes a whole request at once: it must expose exactly what
prometheus_client's own Histogram would for the same scores."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from serving.metrics import ScoreHistogram

BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 0.8, 0.95, 1.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, s.labels.get("le", ""))] = s.value
    return out


def test_batched_score_histogram_equals_prometheus_histogram_including_bucket_edges():
    rng = np.random.default_rng(3)
    # Values exactly on bucket bounds count in that bucket (Prometheus buckets are "<=").
    # Small requests take the scalar path, large ones the numpy path: both are checked.
    batches = [rng.random(1000), np.array(BUCKETS), np.array([0.0, 1.0, 0.5]), rng.random(1)]
    batches += [np.repeat(np.array(BUCKETS), 3), rng.random(15)]
    ours_reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    ours = ScoreHistogram("fraud_api_score", "scores", BUCKETS, ours_reg)
    ref = Histogram("fraud_api_score", "scores", registry=ref_reg, buckets=BUCKETS)
    for batch in batches:
        ours.observe_many(batch.astype(np.float32))
        for v in batch.astype(np.float32).tolist():
            ref.observe(v)
    got, want = _samples(ours_reg), _samples(ref_reg)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key[0].endswith("_sum"):  # float32 scores summed in another order
            assert np.isclose(got[key], value), f"{key}: {got[key]} != {value}"
        else:
            assert got[key] == value, f"{key}: {got[key]} != {value}"
    assert got[("fraud_api_score_count", "")] == sum(len(b) for b in batches)


def test_score_histogram_text_exposition_has_the_histogram_lines():
    reg = CollectorRegistry()
    ScoreHistogram("fraud_api_score", "scores", BUCKETS, reg).observe_many(np.array([0.3]))
    text = generate_latest(reg).decode()
    assert "# TYPE fraud_api_score histogram" in text
    assert 'fraud_api_score_bucket{le="0.5"} 1.0' in text
    assert 'fraud_api_score_bucket{le="0.2"} 0.0' in text
    assert 'fraud_api_score_bucket{le="+Inf"} 1.0' in text


def test_decision_counters_add_each_batch_to_its_model_versions_predictions_and_alerts():
    from serving.metrics import ServiceMetrics

    m = ServiceMetrics()
    m.count_decisions("3", 10, 2)
    m.count_decisions("3", 5, 0)
    m.count_decisions("4", 1, 1)
    text = m.exposition().decode()
    assert 'fraud_api_predictions_total{model_version="3"} 15.0' in text
    assert 'fraud_api_alerts_total{model_version="3"} 2.0' in text
    assert 'fraud_api_predictions_total{model_version="4"} 1.0' in text
    assert 'fraud_api_alerts_total{model_version="4"} 1.0' in text
