"""Render `dvc plots show` to HTML that works offline.

DVC's default page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net, so on a machine
without internet the page is blank. `dvc plots show --html-template` fills a template of ours
instead: DVC replaces `{plot_divs}` with the plots (each a `vegaEmbed` call with its data inlined),
and `{scripts}` with its CDN <script> tags. Our template has no `{scripts}` placeholder, so those
tags are dropped; it inlines the three libraries' minified builds, installed once from npm into
`<repo>/.cache/vega` (git-ignored). The resulting index.html needs no network to view.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Major versions that dvc-render 1.0's Vega-Lite specs are written for (it pins vega 5.20,
# vega-lite 5.2, vega-embed 6.18 on the CDN).
VEGA_PACKAGES = ("vega@5", "vega-lite@5", "vega-embed@6")
# Load order matters: vega-lite needs the `vega` global, vega-embed needs both.
VEGA_BUILDS = (
    ("vega", "build/vega.min.js"),
    ("vega-lite", "build/vega-lite.min.js"),
    ("vega-embed", "build/vega-embed.min.js"),
)
TEMPLATE_NAME = "offline-template.html"
# dvc_render.html.HTML's placeholders (dvc-render 1.0): the template must contain PLOTS once.
PLOTS_PLACEHOLDER = "{plot_divs}"
REFRESH_PLACEHOLDER = "{refresh_tag}"
_DVC_PLACEHOLDERS = (PLOTS_PLACEHOLDER, REFRESH_PLACEHOLDER, "{scripts}")


class PlotRenderError(RuntimeError):
    """The offline plots page could not be rendered; the message says what to fix."""


def default_vega_dir(repo_root: Path) -> Path:
    """Where the npm packages and the offline template live: `<repo_root>/.cache/vega`."""
    return repo_root / ".cache" / "vega"


def vega_build_paths(vega_dir: Path) -> list[Path]:
    """The minified builds of vega, vega-lite and vega-embed under `vega_dir`, in load order."""
    return [vega_dir / "node_modules" / package / build for package, build in VEGA_BUILDS]


def ensure_vega_builds(vega_dir: Path) -> list[Path]:
    """Install vega, vega-lite and vega-embed with npm into `vega_dir` unless already there.

    Needs npm and the npm registry only the first time; returns the builds' paths in load order.
    """
    builds = vega_build_paths(vega_dir)
    if all(path.is_file() for path in builds):
        return builds
    npm = shutil.which("npm")
    if npm is None:
        raise PlotRenderError(
            "npm is not on PATH: it is needed once to install vega, vega-lite and vega-embed "
            f"into {vega_dir} for offline plots (Debian: apt-get install -y npm)"
        )
    vega_dir.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--prefix", str(vega_dir), "--no-audit", "--no-fund"]
    env = {**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"}
    result = subprocess.run(
        [*command, *VEGA_PACKAGES], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise PlotRenderError(
            f"npm install of {' '.join(VEGA_PACKAGES)} into {vega_dir} failed "
            f"(exit {result.returncode}):\n{_tail(result.stderr or result.stdout)}"
        )
    missing = [str(path) for path in builds if not path.is_file()]
    if missing:
        raise PlotRenderError(f"npm install finished but these builds are missing: {missing}")
    return builds


def _package_version(build: Path) -> str:
    package_json = build.parent.parent / "package.json"
    try:
        return str(json.loads(package_json.read_text(encoding="utf8"))["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def _inline_script(source: str) -> str:
    # Inside <script>, "</script" ends the element and "<!--" changes how HTML parses it; both can
    # only occur in JS string or regex literals, where "<\/" and "\x3C!--" mean the same.
    source = re.sub(r"</(script)", r"<\\/\1", source, flags=re.IGNORECASE)
    return source.replace("<!--", "\\x3C!--")


def offline_template(builds: list[Path]) -> str:
    """An HTML template for `dvc plots show --html-template` with the given JS builds inlined."""
    scripts = []
    for build in builds:
        source = build.read_text(encoding="utf8")
        for placeholder in _DVC_PLACEHOLDERS:
            if placeholder in source:
                # DVC substitutes placeholders anywhere in the template, scripts included.
                raise PlotRenderError(f"{build} contains DVC's placeholder {placeholder}")
        name = build.parent.parent.name
        scripts.append(
            f"<script>/* {name} {_package_version(build)} */\n{_inline_script(source)}\n</script>"
        )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            "<html>",
            "<head>",
            '<meta charset="utf-8">',
            REFRESH_PLACEHOLDER,
            "<title>DVC plots</title>",
            *scripts,
            "<style>",
            "  body { font-family: sans-serif; }",
            "  table { border-spacing: 15px; }",
            "</style>",
            "</head>",
            "<body>",
            PLOTS_PLACEHOLDER,
            "</body>",
            "</html>",
            "",
        ]
    )


def write_offline_template(vega_dir: Path) -> Path:
    """Install the builds if needed, write `<vega_dir>/offline-template.html`, return it."""
    template = offline_template(ensure_vega_builds(vega_dir))
    path = vega_dir / TEMPLATE_NAME
    if not path.is_file() or path.read_text(encoding="utf8") != template:
        path.write_text(template, encoding="utf8")
    return path


def render_plots(repo_root: Path, out_dir: Path, vega_dir: Path | None = None) -> Path:
    """Run `dvc plots show` in `repo_root` into `out_dir` with Vega inlined; return index.html.

    `out_dir` is relative to the current directory, like any path. `vega_dir` defaults to
    `<repo_root>/.cache/vega`; tests point it at a shared cache. The page needs no network.
    """
    repo_root = repo_root.resolve()
    out_dir = out_dir.resolve()
    template = write_offline_template((vega_dir or default_vega_dir(repo_root)).resolve())
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "ITERATIVE_DO_NOT_TRACK": "1"}
    command = [
        sys.executable,
        "-m",
        "dvc",
        "plots",
        "show",
        "--html-template",
        str(template),
        "-o",
        str(out_dir),
    ]
    result = subprocess.run(
        command, cwd=repo_root, capture_output=True, text=True, env=env, check=False
    )
    output = _tail(result.stderr + result.stdout)
    if result.returncode != 0:
        raise PlotRenderError(f"dvc plots show failed (exit {result.returncode}):\n{output}")
    index = out_dir / "index.html"
    if not index.is_file():
        raise PlotRenderError(
            f"dvc plots show wrote no {index}: no plots were loaded. Check the `plots:` "
            f"section of dvc.yaml and that its files exist (run `dvc repro`).\n{output}"
        )
    return index


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
