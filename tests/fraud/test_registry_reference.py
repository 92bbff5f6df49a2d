"""The monitoring reference published with each model version (`fraud.registry.reference`):
the test window's rows, with the model's out-of-sample scores and the labels, in the layout
the prediction-log reader returns, so a production window compares with it column by column.
Read back from the real MLflow store the tiny pipeline's `dvc repro` wrote."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fraud import registry, schema
from fraud.predictions import WINDOW_COLUMNS
from fraud.registry.reference import REFERENCE_LOG_COLUMNS


def test_champion_reference_is_its_test_window_with_its_scores_labels_and_features(
    pipeline_repo,
    pipeline_store,
):
    version, ref = registry.read_reference(registry.DEFAULT_MODEL_NAME)
    window = json.loads((pipeline_repo.path / "reports/metrics.json").read_text())["window"]
    start, end = (pd.Timestamp(t) for t in window["test"].split(".."))
    features = pd.read_parquet(pipeline_repo.path / "data/features/transactions.parquet")
    rows = features[
        (features[schema.TX_DATETIME] >= start)
        & (features[schema.TX_DATETIME] < end + pd.Timedelta(days=1))
    ]
    booster = registry.load_booster(pipeline_repo.path / "models/model.ubj")
    scores = booster.inplace_predict(rows[version.features].to_numpy(np.float32))
    gate_rows = pd.read_parquet(pipeline_repo.path / "reports/test_scores.parquet")

    assert version.alias == registry.ALIAS_CHAMPION
    assert list(ref.columns) == [*REFERENCE_LOG_COLUMNS, *sorted(version.features)]
    # Every transaction of the test window, also the cards the gate's rows leave out.
    assert ref["transaction_id"].tolist() == rows[schema.TRANSACTION_ID].tolist()
    assert len(ref) > len(gate_rows)
    np.testing.assert_allclose(ref["score"], scores, rtol=1e-6)
    assert ref["is_fraud"].tolist() == rows[schema.TX_FRAUD].astype(int).tolist()
    assert (ref["is_alert"] == (ref["score"] >= version.threshold)).all()
    # The same column names and dtypes as a production window from the prediction log.
    for column, dtype in REFERENCE_LOG_COLUMNS.items():
        assert WINDOW_COLUMNS[column] == dtype == str(ref[column].dtype)


def test_reference_frame_names_the_columns_the_rows_lack():
    rows = pd.DataFrame({schema.TRANSACTION_ID: [1], schema.TX_FRAUD: [0]})
    with pytest.raises(ValueError, match=r"lack the columns.*TX_DATETIME"):
        registry.reference_frame(rows, np.array([0.5]), features=["TX_AMOUNT"], threshold=0.5)


def test_reference_frame_refuses_scores_that_do_not_match_the_rows():
    with pytest.raises(ValueError, match="2 rows but 1 scores"):
        registry.reference_frame(
            pd.DataFrame(index=[0, 1]), np.array([0.5]), features=[], threshold=0.5
        )
