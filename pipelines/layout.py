"""Where each stage reads and writes (no heavy imports: the CLI loads it for every command)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Where each stage reads and writes, relative to `root` (the project directory)."""

    root: Path = Path(".")

    def __truediv__(self, rel: str) -> Path:
        return self.root / rel

    @property
    def raw(self) -> Path:
        return self / "data/raw/transactions.parquet"

    @property
    def validation_report(self) -> Path:
        return self / "reports/validation.json"

    @property
    def failed_validation_report(self) -> Path:
        """The report of a validation that failed, kept beside the last good one."""
        return self / "reports/validation.failed.json"

    @property
    def features(self) -> Path:
        return self / "data/features/transactions.parquet"

    @property
    def model(self) -> Path:
        return self / "models/model.ubj"

    @property
    def train_info(self) -> Path:
        return self / "models/train_info.json"

    @property
    def metrics(self) -> Path:
        return self / "reports/metrics.json"

    @property
    def plots(self) -> Path:
        return self / "reports/plots"

    @property
    def test_scores(self) -> Path:
        return self / "reports/test_scores.parquet"

    @property
    def prequential(self) -> Path:
        return self / "reports/prequential.json"

    @property
    def registration(self) -> Path:
        return self / "reports/registration.json"
