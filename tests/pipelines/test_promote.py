"""Promotion and rollback by hand (`pipelines.promote`, `fraud promote` / `fraud rollback`)
against a real MLflow SQLite registry: three versions of `fraud-detector`, v1 @champion and v2
@challenger as the gate leaves them. Each test works on its own copy of that store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fraud import registry
from pipelines import promote as p
from pipelines.cli import app
from pipelines.register import TAG_INTERRUPTED
from tests.serving.conftest import copy_registry, mlflow_tracking_uri

# A real MLflow store (its tables take about 10 s to create): the integration tier.
pytestmark = pytest.mark.integration

MODEL = registry.DEFAULT_MODEL_NAME


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The registry the copies start from (MLflow creates its tables once: about 10 s)."""
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('promote-store') / 'mlflow.db'}"
    with mlflow_tracking_uri(uri):
        client = MlflowClient()
        client.create_registered_model(MODEL)
        with mlflow.start_run() as run:
            mlflow.log_text("stand-in for the model directory", "model/MLmodel")
        for _ in range(3):
            client.create_model_version(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id)
        client.set_registered_model_alias(MODEL, registry.ALIAS_CHAMPION, "1")
        client.set_registered_model_alias(MODEL, registry.ALIAS_CHALLENGER, "2")
    return uri


@pytest.fixture
def registry_uri(store: str, tmp_path: Path) -> Iterator[str]:
    """A private copy of the store, which this process's MLflow points at during the test."""
    uri = copy_registry(store, tmp_path / "registry")
    with mlflow_tracking_uri(uri):
        yield uri


def aliases() -> dict[str, str]:
    from mlflow import MlflowClient

    # MLflow gives the versions of aliases as integers, of everything else as text.
    return {k: str(v) for k, v in MlflowClient().get_registered_model(MODEL).aliases.items()}


def tags(version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient().get_model_version(MODEL, version).tags)


def test_promote_moves_champion_keeps_the_replaced_one_as_previous_and_records_who_when_why(
    registry_uri: str,
) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    move = p.promote(MODEL, "2", reason="canary held AP for a week", by="alice")
    assert (move.champion, move.replaced, move.previous) == ("2", "1", "1")
    assert aliases() == {"champion": "2", "previous": "1", "challenger": "2"}
    # What the API's loader resolves on its next poll.
    assert registry.resolve_version(MODEL, registry.ALIAS_CHAMPION) == "2"
    t = tags("2")
    assert t[p.TAG_ACTION] == "promote"
    assert t[p.TAG_BY] == "alice"
    assert t[p.TAG_REASON] == "canary held AP for a week"
    assert t[p.TAG_REPLACED] == "1"
    assert dt.datetime.fromisoformat(t[p.TAG_AT]) >= before
    assert tags("1")[p.TAG_SUPERSEDED_BY] == "2"


def test_rollback_restores_the_previous_champion_and_records_why(registry_uri: str) -> None:
    p.promote(MODEL, "2", reason="canary held", by="alice")
    move = p.rollback(MODEL, reason="alert rate doubled", by="bob")
    assert (move.champion, move.replaced, move.previous) == ("1", "2", None)
    # v1 was champion by the gate, not by a promotion: nothing older is recorded.
    assert aliases() == {"champion": "1", "challenger": "2"}
    t = tags("1")
    assert (t[p.TAG_ACTION], t[p.TAG_BY], t[p.TAG_REASON]) == (
        "rollback",
        "bob",
        "alert rate doubled",
    )
    assert tags("2")[p.TAG_SUPERSEDED_BY] == "1"


def test_successive_rollbacks_walk_back_through_the_promotions(registry_uri: str) -> None:
    p.promote(MODEL, "2", reason="first", by="a")
    p.promote(MODEL, "3", reason="second", by="a")
    assert aliases()["previous"] == "2"
    assert p.rollback(MODEL, reason="v3 bad", by="a").previous == "1"
    assert aliases() == {"champion": "2", "previous": "1", "challenger": "2"}
    assert p.rollback(MODEL, reason="v2 bad too", by="a").champion == "1"
    with pytest.raises(p.PromotionError, match="no @previous"):
        p.rollback(MODEL, reason="again", by="a")


@pytest.mark.parametrize("version", ["7", "abc"])
def test_promoting_a_version_that_does_not_exist_names_it_and_the_ones_that_do(
    registry_uri: str, version: str
) -> None:
    with pytest.raises(p.PromotionError) as e:
        p.promote(MODEL, version, reason="typo", by="a")
    assert f"no version '{version}'" in str(e.value)
    assert "its versions: 1, 2, 3" in str(e.value)
    assert aliases() == {"champion": "1", "challenger": "2"}


def test_promoting_a_version_whose_registration_was_interrupted_refuses_naming_why(
    registry_uri: str,
) -> None:
    from mlflow import MlflowClient

    why = "the registration (vm:1) was killed before the alias 'challenger' was set"
    MlflowClient().set_model_version_tag(MODEL, "3", TAG_INTERRUPTED, why)
    with pytest.raises(p.PromotionError) as e:
        p.promote(MODEL, "3", reason="looks fine", by="a")
    assert f"version 3 of model '{MODEL}' is tagged {TAG_INTERRUPTED} ({why})" in str(e.value)
    assert aliases() == {"champion": "1", "challenger": "2"}
    assert not any(t.startswith("promotion.") for t in tags("3"))  # nothing recorded on it


def test_rollback_without_previous_refuses_and_leaves_the_champion(registry_uri: str) -> None:
    with pytest.raises(p.PromotionError, match="has no @previous version"):
        p.rollback(MODEL, reason="panic", by="a")
    assert aliases() == {"champion": "1", "challenger": "2"}


def test_promoting_the_champion_or_without_a_reason_refuses(registry_uri: str) -> None:
    with pytest.raises(p.PromotionError, match="already @champion"):
        p.promote(MODEL, "1", reason="again", by="a")
    with pytest.raises(p.PromotionError, match="a reason is required"):
        p.promote(MODEL, "2", reason="  ", by="a")
    with pytest.raises(p.PromotionError, match="no registered model 'nope'"):
        p.promote("nope", "1", reason="x", by="a")
    assert aliases() == {"champion": "1", "challenger": "2"}


def test_cli_promote_and_rollback_print_the_move_and_fail_in_one_line(
    registry_uri: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    no_params = ["--params", str(tmp_path / "absent.yaml")]  # the model name's default
    env = {"FRAUD_OPERATOR": "carol", "MLFLOW_TRACKING_URI": registry_uri}
    r = runner.invoke(app, ["promote", "3", "--reason", "canary won", *no_params], env=env)
    assert r.exit_code == 0, r.output
    assert "@champion v1 -> v3 (promote by carol); @previous: v1" in r.output
    assert tags("3")[p.TAG_BY] == "carol"
    r = runner.invoke(app, ["rollback", "--reason", "p99 up", *no_params], env=env)
    assert r.exit_code == 0, r.output
    assert "@champion v3 -> v1 (rollback by carol); @previous: none" in r.output
    r = runner.invoke(app, ["rollback", "--reason", "again", *no_params], env=env)
    assert r.exit_code == 1
    assert "error:" in r.output and "has no @previous version" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["promote", "9", "--reason", "x", *no_params], env=env)
    assert r.exit_code == 1 and "no version '9'" in r.output


def test_cli_help_names_the_arguments() -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["promote", "--help"])
    assert r.exit_code == 0
    assert "VERSION" in r.output and "--reason" in r.output and "@previous" in r.output
    r = runner.invoke(app, ["rollback", "--help"])
    assert r.exit_code == 0 and "--reason" in r.output
    r = runner.invoke(app, ["rollback"])  # the reason is required
    assert r.exit_code == 2 and "--reason" in r.output
