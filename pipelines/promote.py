"""Promotion and rollback by hand: move `@champion` to a version, or back to the one before.

The gate (`pipelines.register`) decides at registration; these are the operator's commands
after that: promote the `@challenger` a canary has proven (docs/delivery.md), or roll back a
champion that misbehaves in production. Both only move registry aliases and write tags: the API
picks the new `@champion` up on its next alias poll (`FRAUD_RELOAD_POLL_SECONDS`) or on
`POST /admin/reload`, without a rollout.

`@previous` is the champion a promotion replaced: what `rollback` restores. A fact ("the one
before"), not an intent: nothing else serves it, and `models:/fraud-detector@previous` reads as
what it is. Each promotion also tags the new champion with the version it replaced, so a rollback
can set `@previous` one step further back and a second rollback goes on down the history. Every
move writes who, when and why on the version that becomes champion.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from fraud import registry
from pipelines.register import TAG_INTERRUPTED

if TYPE_CHECKING:
    from mlflow import MlflowClient

ALIAS_PREVIOUS = registry.ALIAS_PREVIOUS

# Tags on the version that becomes @champion by hand (the gate's own are `gate.*`).
TAG_ACTION = "promotion.action"  # "promote" or "rollback"
TAG_BY = "promotion.by"
TAG_AT = "promotion.at"  # ISO 8601, UTC
TAG_REASON = "promotion.reason"
#: The champion this version replaced: where a later rollback of this version sends @previous.
TAG_REPLACED = registry.TAG_REPLACED
# On the version that stops being @champion.
TAG_SUPERSEDED_BY = "promotion.superseded_by"
TAG_SUPERSEDED_AT = "promotion.superseded_at"

#: MLflow's error codes for a model, version or alias that does not exist.
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"}


class PromotionError(ValueError):
    """A promotion or rollback that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class ChampionMove:
    """What a promotion or rollback did."""

    model_name: str
    action: Literal["promote", "rollback"]
    champion: str  # the version now @champion
    replaced: str | None  # the version that was @champion before
    previous: str | None  # the version @previous points at now (None: no alias)
    by: str
    at: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def operator() -> str:
    """Who runs the command: FRAUD_OPERATOR, else the login name (recorded in the tags)."""
    name = os.environ.get("FRAUD_OPERATOR", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container's uid without a passwd entry)
        return "unknown"


def promote(
    model_name: str, version: str | int, *, reason: str, by: str | None = None
) -> ChampionMove:
    """Make `version` the `@champion`; the champion it replaces becomes `@previous`.

    Raises PromotionError when the model or version does not exist, the version is already the
    champion, its registration was interrupted (tagged `registration.interrupted`: never
    gated, maybe incomplete), or the reason is empty.
    """
    reason = _checked_reason(reason)
    client = _client()
    version = _existing_version(client, model_name, str(version))
    interrupted = client.get_model_version(model_name, version).tags.get(TAG_INTERRUPTED)
    if interrupted is not None:
        raise PromotionError(
            f"version {version} of model {model_name!r} is tagged {TAG_INTERRUPTED} "
            f"({interrupted}): it was never judged by the gate; register the model again "
            "(dvc repro) and promote that version"
        )
    current = _alias_version(client, model_name, registry.ALIAS_CHAMPION)
    if current == version:
        raise PromotionError(
            f"version {version} is already @champion of model {model_name!r}: nothing to promote"
        )
    who, when = by or operator(), _now()
    client.set_model_version_tag(model_name, version, TAG_REPLACED, current or "")
    _move_champion(client, model_name, version, current, "promote", who, when, reason)
    if current is not None:
        client.set_registered_model_alias(model_name, ALIAS_PREVIOUS, current)
    return ChampionMove(model_name, "promote", version, current, current, who, when, reason)


def rollback(model_name: str, *, reason: str, by: str | None = None) -> ChampionMove:
    """Put `@champion` back on `@previous`.

    `@previous` then moves one step further back (the version the restored one had replaced,
    when a promotion recorded it), or is removed. Raises PromotionError when there is no
    `@previous`, or it is the champion already.
    """
    reason = _checked_reason(reason)
    client = _client()
    _existing_model(client, model_name)
    target = _alias_version(client, model_name, ALIAS_PREVIOUS)
    if target is None:
        raise PromotionError(
            f"model {model_name!r} has no @previous version: nothing to roll back to (the gate "
            "and `fraud promote` set it when they replace a champion); choose a version and "
            "run `fraud promote VERSION --reason ...`"
        )
    current = _alias_version(client, model_name, registry.ALIAS_CHAMPION)
    if current == target:
        raise PromotionError(
            f"@previous of model {model_name!r} is version {target}, which is @champion already"
        )
    who, when = by or operator(), _now()
    _move_champion(client, model_name, target, current, "rollback", who, when, reason)
    # One step further back: the champion that `target` itself replaced, if it still exists.
    older = client.get_model_version(model_name, target).tags.get(TAG_REPLACED) or None
    if older is not None and older != target and _version_exists(client, model_name, older):
        client.set_registered_model_alias(model_name, ALIAS_PREVIOUS, older)
    else:
        older = None
        client.delete_registered_model_alias(model_name, ALIAS_PREVIOUS)
    return ChampionMove(model_name, "rollback", target, current, older, who, when, reason)


def _move_champion(
    client: MlflowClient,
    model_name: str,
    version: str,
    current: str | None,
    action: str,
    who: str,
    when: str,
    reason: str,
) -> None:
    # Tags first: a champion is never seen without the record of why it is one.
    for key, value in {
        TAG_ACTION: action,
        TAG_BY: who,
        TAG_AT: when,
        TAG_REASON: reason,
    }.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_registered_model_alias(model_name, registry.ALIAS_CHAMPION, version)
    if current is not None:
        client.set_model_version_tag(model_name, current, TAG_SUPERSEDED_BY, version)
        client.set_model_version_tag(model_name, current, TAG_SUPERSEDED_AT, when)


def _client() -> MlflowClient:
    import mlflow
    from mlflow import MlflowClient

    from pipelines.register import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    return MlflowClient()


def _checked_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise PromotionError("a reason is required: it is recorded on the version (--reason)")
    return reason[: registry.MAX_TAG_LENGTH]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _existing_model(client: MlflowClient, model_name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
    except MlflowException as e:
        if e.error_code not in _NOT_FOUND:
            raise
        raise PromotionError(
            f"no registered model {model_name!r} in {_uri()}: check --model and MLFLOW_TRACKING_URI"
        ) from None


def _existing_version(client: MlflowClient, model_name: str, version: str) -> str:
    _existing_model(client, model_name)
    if _version_exists(client, model_name, version):
        return version
    versions = sorted(
        (str(v.version) for v in client.search_model_versions(f"name = '{model_name}'")),
        key=lambda v: int(v) if v.isdigit() else 0,
    )
    raise PromotionError(
        f"model {model_name!r} has no version {version!r} in {_uri()}; its versions: "
        f"{', '.join(versions) or 'none'}"
    )


def _version_exists(client: MlflowClient, model_name: str, version: str) -> bool:
    from mlflow.exceptions import MlflowException

    if not version.isdigit():  # MLflow's SQL store fails on a non-integer version otherwise
        return False
    try:
        client.get_model_version(model_name, version)
    except MlflowException as e:
        if e.error_code not in _NOT_FOUND:
            raise
        return False
    return True


def _alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as e:
        if e.error_code not in _NOT_FOUND:
            raise
        return None


def _uri() -> str:
    import mlflow

    return str(mlflow.get_tracking_uri())
