"""The domain core imports without MLflow, FastAPI or Prefect (the layering rule of
docs/architecture.md): `monitoring` and the serving image depend on it staying that way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_fraud_module_imports_with_mlflow_fastapi_and_prefect_unavailable():
    # A None entry in sys.modules makes `import mlflow` raise ImportError, as if not installed.
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        for blocked in ("mlflow", "fastapi", "prefect"):
            sys.modules[blocked] = None
        import fraud
        names = sorted(m.name for m in pkgutil.walk_packages(fraud.__path__, "fraud."))
        for name in names:
            importlib.import_module(name)
        print(" ".join(names))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    imported = set(proc.stdout.split())
    assert {"fraud.registry", "fraud.registry.reader", "fraud.features"} <= imported
    assert any(name.startswith("fraud.predictions") for name in imported)
