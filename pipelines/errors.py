"""Domain errors of the pipeline, importable without the heavy libraries (the CLI maps them to
one clear line and exit status 1)."""

from __future__ import annotations


class ParamsError(ValueError):
    """params.yaml is missing, unreadable or has a key with a wrong value."""


class IngestError(ValueError):
    """The input file cannot be read as transactions."""


class TrainingError(ValueError):
    """The training window cannot produce a model (no rows, no frauds)."""


class ComputeError(ValueError):
    """The Dask cluster lost work it cannot recover (a worker died, most often of memory)."""
