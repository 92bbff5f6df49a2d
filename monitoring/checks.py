"""One check's outcome: what every detector returns, the verdict lists and the policy reads.

A check compares one statistic with one threshold: a column's drift, the score's drift, the
alert rate, a matured cohort's average precision, the gap between the label-free estimate and
the realised figure, ... `fired` says whether it crossed its threshold in the direction that
means trouble.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: What a check watches. data: an input column; prediction: the score or the alert rate;
#: performance: a metric on labelled (matured) cohorts; estimate: a label-free estimate.
Kind = Literal["data", "prediction", "performance", "estimate"]


@dataclass(frozen=True)
class Check:
    name: str  # unique within a run, e.g. "drift:TX_AMOUNT", "performance:average_precision"
    kind: Kind
    method: str  # e.g. "psi", "wasserstein", "two_proportion_z", "ap_drop"
    statistic: float
    threshold: float
    fired: bool
    column: str | None = None
    #: Window, sample sizes, reference value, ... (JSON-serialisable).
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Check:
        return cls(**d)
