"""The serving image installs serving/requirements.txt, not the whole project: that list must
cover every third-party module the service imports (transitively through `fraud/`), and each
entry must be a dependency of the project pinned by constraints.txt."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"fraud", "serving"}


def _requirements() -> list[Requirement]:
    lines = (ROOT / "serving" / "requirements.txt").read_text().splitlines()
    return [
        Requirement(line.split("#", 1)[0].strip())
        for line in lines
        if line.split("#", 1)[0].strip()
    ]


def _pinned() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonicalize_name(name)] = version.strip()
    return out


def _imports(path: Path) -> set[str]:
    """Every module a file imports (and every name it imports from one, which may be a module),
    function-level imports included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from fraud import registry` imports the module fraud.registry.
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def _module_files(name: str) -> list[Path]:
    """The files that importing `name` (in fraud/) runs: each package's `__init__.py` on the
    way, and the module itself (a `.py` file or a package)."""
    parts = name.split(".")
    files = []
    for i in range(1, len(parts) + 1):
        base = ROOT.joinpath(*parts[:i])
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.exists():
                files.append(candidate)
    return files


def _served_modules() -> set[str]:
    """Third-party top-level modules imported by serving/ and the fraud/ modules it reaches."""
    todo = list((ROOT / "serving").rglob("*.py"))
    seen: set[Path] = set()
    third_party = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "fraud":
                todo += _module_files(name)
            elif top not in LOCAL and top not in sys.stdlib_module_names:
                third_party.add(top)
    return third_party


def _closure(reqs: list[Requirement]) -> set[str]:
    """The distributions that installing `reqs` brings (from the installed metadata)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [(r.name, frozenset(r.extras)) for r in reqs]
    while stack:
        name, extras = stack.pop()
        key = canonicalize_name(name)
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                stack.append((req.name, frozenset(req.extras)))
    return {key for key, _ in seen}


def test_every_serving_requirement_is_a_pinned_project_dependency():
    pinned = _pinned()
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    project = {canonicalize_name(Requirement(d).name) for d in dependencies}
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, (
            f"serving/requirements.txt: {req.name} is not pinned in constraints.txt"
        )
        assert not str(req.specifier), f"{req}: versions come from constraints.txt"
        # mlflow-skinny is mlflow's own client package, pinned at mlflow's version.
        assert name in project or name == "mlflow-skinny", f"{req.name} is not a dependency"
    assert pinned["mlflow-skinny"] == pinned["mlflow"]


def test_serving_requirements_provide_every_module_the_service_imports():
    modules = _served_modules()
    assert {
        "fastapi",
        "fastapi_offline",
        "xgboost",
        "mlflow",
        "redis",
        "psycopg",
        "orjson",
    } <= modules
    provided = _closure(_requirements())
    by_module = metadata.packages_distributions()
    missing = {
        m: by_module.get(m)
        for m in modules
        if not {canonicalize_name(d) for d in by_module.get(m, [])} & provided
    }
    assert not missing, (
        f"imported by serving/ but not installed by serving/requirements.txt: {missing}"
    )
    # And the image stays slim: none of the pipeline's heavy dependencies come along.
    assert not provided & {"dvc", "prefect", "scikit-learn", "matplotlib", "mlflow"}, provided & {
        "dvc",
        "prefect",
        "scikit-learn",
        "matplotlib",
        "mlflow",
    }
