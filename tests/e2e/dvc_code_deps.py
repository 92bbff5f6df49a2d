"""The code each DVC stage runs, derived from the code itself, and the checks of dvc.yaml and
dvc.lock against it.

A stage's code is every project module its command imports when it runs for real (traced in a
subprocess), plus the module-level imports of those modules, transitively (so a module imported
only on a branch that this run did not take still counts). Imports inside functions count only
when they run: the CLI and `pipelines/stages.py` import each stage's steps in the function that
runs it, which is what keeps a stage's closure to its own steps.

Print the `deps` that dvc.yaml should list, or write them into it (runs the tiny pipeline in a
temporary directory, about a minute):

    .venv/bin/python -m tests.e2e.dvc_code_deps [--write]
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

#: Top-level packages whose files are code dependencies of the stages.
CODE_PACKAGES = ("fraud", "pipelines")

# Runs a module as `python -m` would, then writes every imported file to argv[1]; atexit, so
# that a command that ends with sys.exit (typer does) still reports.
_TRACER = """
import atexit, json, runpy, sys
out, module, *args = sys.argv[1:]
def report():
    files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
    with open(out, "w") as f:
        json.dump(sorted(f for f in files if f), f)
atexit.register(report)
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def stage_commands(dvc_yaml: Path) -> dict[str, list[str]]:
    """Each stage's command as an argument list."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: shlex.split(stage["cmd"]) for name, stage in stages.items()}


def is_code(path: str) -> bool:
    return path.split("/", 1)[0] in CODE_PACKAGES


def declared_code_deps(root: Path) -> dict[str, set[str]]:
    """The code files each stage of root/dvc.yaml depends on (a directory dep: its .py files)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    out: dict[str, set[str]] = {}
    for name, stage in stages.items():
        files: set[str] = set()
        for dep in stage.get("deps", []):
            if not is_code(dep):
                continue
            if (root / dep).is_dir():
                files.update(
                    p.relative_to(root).as_posix()
                    for p in (root / dep).rglob("*.py")
                    if "__pycache__" not in p.parts
                )
            else:
                files.add(dep)
        out[name] = files
    return out


def traced_imports(root: Path, argv: list[str], env: Mapping[str, str]) -> set[str]:
    """Run a stage's `python -m MODULE ...` command in root; the project files it imported."""
    if argv[:2] != ["python", "-m"]:
        raise ValueError(f"expected a `python -m MODULE ...` stage command, got {shlex.join(argv)}")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "imports.json"
        proc = subprocess.run(
            [sys.executable, "-c", _TRACER, str(report), *argv[2:]],
            cwd=root,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"{shlex.join(argv)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        files = json.loads(report.read_text())
    resolved = root.resolve()
    # The module run as __main__ is not in sys.modules under its own name.
    out = _module_and_packages(root, argv[2])
    for f in files:
        path = Path(f).resolve()
        if path.is_relative_to(resolved):
            rel = path.relative_to(resolved).as_posix()
            if is_code(rel):
                out.add(rel)
    return out


def _module_file(root: Path, module: str) -> str | None:
    parts = module.split(".")
    for candidate in (Path(*parts).with_suffix(".py"), Path(*parts, "__init__.py")):
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def _module_and_packages(root: Path, module: str) -> set[str]:
    """The project files that importing `module` loads first: a.b.c loads a, a.b and a.b.c."""
    parts = module.split(".")
    if parts[0] not in CODE_PACKAGES:
        return set()
    found = (_module_file(root, ".".join(parts[:i])) for i in range(1, len(parts) + 1))
    return {f for f in found if f}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: Iterable[ast.stmt]) -> Iterable[ast.stmt]:
    """Statements that run when the module is imported: not function bodies, not TYPE_CHECKING."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_statements(node.body)
            yield from _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _import_time_statements(block)
            for handler in node.handlers:
                yield from _import_time_statements(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _import_time_statements(node.body)


def module_level_imports(root: Path, path: str) -> set[str]:
    """The project files that importing root/path imports directly."""
    tree = ast.parse((root / path).read_text(), filename=path)
    # The package that relative imports start from (for pkg/__init__.py, pkg itself).
    package = Path(path).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in _import_time_statements(tree.body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return {f for name in names for f in _module_and_packages(root, name)}


def static_closure(root: Path, files: Iterable[str]) -> set[str]:
    """files and, transitively, the project files their module-level imports load."""
    todo = list(files)
    seen: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen or not path.endswith(".py"):
            continue
        seen.add(path)
        todo.extend(module_level_imports(root, path) - seen)
    return seen


def stage_code(root: Path, env: Mapping[str, str]) -> dict[str, set[str]]:
    """For each stage of root/dvc.yaml, the project files it runs (run each one for real, in
    pipeline order, on a repo whose inputs exist)."""
    return {
        name: static_closure(root, traced_imports(root, argv, env))
        for name, argv in stage_commands(root / "dvc.yaml").items()
    }


def missing_code_deps(root: Path, code: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """Per stage, the files it runs that root/dvc.yaml does not list as deps."""
    declared = declared_code_deps(root)
    return {
        name: sorted(files - declared.get(name, set()))
        for name, files in code.items()
        if files - declared.get(name, set())
    }


def stale_lock_entries(root: Path) -> list[str]:
    """What root/dvc.lock records differently from root/dvc.yaml and the code: a stage's
    command, its list of code deps, or the hash of a code dep (as DVC computes it: a file's md5,
    a directory's .dir hash over its files, .dvcignore applied)."""
    from dvc.repo import Repo

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    locked = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    problems = []
    for name, stage in stages.items():
        lock = locked.get(name)
        if lock is None:
            problems.append(f"{name}: not in dvc.lock")
            continue
        if lock["cmd"] != stage["cmd"]:
            problems.append(
                f"{name}: cmd {lock['cmd']!r} in dvc.lock, {stage['cmd']!r} in dvc.yaml"
            )
        yaml_code = {d for d in stage.get("deps", []) if is_code(d)}
        lock_code = {d["path"] for d in lock.get("deps", []) if is_code(d["path"])}
        if yaml_code != lock_code:
            added, dropped = sorted(yaml_code - lock_code), sorted(lock_code - yaml_code)
            problems.append(
                f"{name}: code deps not in dvc.lock {added}, only in dvc.lock {dropped}"
            )
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            for dep in stage.deps:
                path = dep.def_path
                if not is_code(path) or path not in lock_code_paths(locked, stage.name):
                    continue
                if not (root / path).exists():
                    problems.append(f"{stage.name}: {path} is in dvc.lock but does not exist")
                elif dep.changed_checksum():
                    problems.append(f"{stage.name}: {path} changed since dvc.lock recorded it")
    return problems


def lock_code_paths(locked: Mapping[str, dict], stage: str) -> set[str]:
    return {d["path"] for d in locked.get(stage, {}).get("deps", []) if is_code(d["path"])}


def dvc_yaml_code_deps(root: Path, files: set[str]) -> list[str]:
    """files as dvc.yaml lists them: a package directory all of whose modules a stage runs as
    the directory (so a module added to it is covered), the others one by one."""
    deps: list[str] = []
    covered: set[str] = set()
    for package in sorted(
        {Path(f).parent.as_posix() for f in files if Path(f).name == "__init__.py"},
        key=lambda d: (d.count("/"), d),
    ):
        if any(package.startswith(f"{dep}/") for dep in deps):
            continue
        modules = {
            p.relative_to(root).as_posix()
            for p in (root / package).rglob("*.py")
            if "__pycache__" not in p.parts
        }
        if modules <= files:
            deps.append(package)
            covered |= modules
    return sorted([*deps, *(files - covered)])


def expected_deps(root: Path, code: Mapping[str, set[str]]) -> dict[str, list[str]]:
    """The deps of each stage as dvc.yaml should list them: its data deps as they are, then its
    code, sorted."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return {
        name: [
            *(d for d in stage.get("deps", []) if not is_code(d)),
            *dvc_yaml_code_deps(root, code[name]),
        ]
        for name, stage in stages.items()
    }


def rewrite_deps(dvc_yaml: str, deps: Mapping[str, list[str]]) -> str:
    """dvc_yaml's text with each stage's `deps:` list replaced, comments and layout kept."""
    for name, paths in deps.items():
        block = re.compile(rf"(\n  {name}:\n    cmd: [^\n]+\n    deps:\n)(?:      - [^\n]+\n)+")
        listed = "".join(f"      - {p}\n" for p in paths).replace("\\", "\\\\")
        dvc_yaml, n = block.subn(rf"\g<1>{listed}", dvc_yaml)
        if n != 1:
            raise ValueError(f"stage {name}: expected `cmd:` then a `deps:` list in dvc.yaml")
    return dvc_yaml


def main() -> None:
    """Print the deps each stage of this repository's dvc.yaml should list; --write: put them in."""
    from tests.conftest import ROOT, make_pipeline_repo

    with tempfile.TemporaryDirectory() as tmp:
        repo = make_pipeline_repo(Path(tmp) / "repo")
        # Without its code deps, the copy runs even when dvc.yaml names a file that has moved.
        pipeline = yaml.safe_load((repo.path / "dvc.yaml").read_text())
        for stage in pipeline["stages"].values():
            stage["deps"] = [d for d in stage.get("deps", []) if not is_code(d)]
        (repo.path / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
        repo.run("dvc", "repro")
        deps = expected_deps(ROOT, stage_code(repo.path, repo.env))
    if "--write" in sys.argv[1:]:
        dvc_yaml = ROOT / "dvc.yaml"
        dvc_yaml.write_text(rewrite_deps(dvc_yaml.read_text(), deps))
        print(f"wrote the deps of {', '.join(deps)} into {dvc_yaml}")
    else:
        print(
            yaml.safe_dump({name: {"deps": paths} for name, paths in deps.items()}, sort_keys=False)
        )


if __name__ == "__main__":
    main()
