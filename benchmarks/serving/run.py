#!/usr/bin/env python
"""Serving benchmark: this service against `mlflow models serve`, on the same registered model
version, driven by wrk. See benchmarks/README.md ("Serving") for what each figure means.

Configurations (each on free 127.0.0.1 ports, every file in a temporary directory):

* A: `python -m serving --workers 2` with the shared Redis feature state
  (`FRAUD_FEATURE_STORE=redis://...`, a private `redis-server` without persistence);
* B: `python -m serving` (1 worker) with the in-process feature state (`memory`);
* C: `mlflow models serve --workers 2 --env-manager local` on the same model version.

A and B receive raw transactions (unique ids, increasing datetimes, random customers,
terminals and amounts), compute the 23 features online and log every prediction; C receives
the model's ready-made feature vector (`dataframe_split`) and logs nothing. The comparison
favours MLflow.

Each configuration gets a short warm-up, then `wrk -t1 -cC -dDs --latency` at each concurrency
(1, 8, 64). On the faster of A and B: `/predict?explain=true` at c=8; on each of A and B:
`/predict/batch` with 1000 transactions per request (the target takes the better); the same
1000-row batch goes to MLflow. A run in which fewer workers than configured did the work (the
kernel gave all of wrk's connections to one of them) is run again, up to --uneven-retries
times. Prints the tables, checks the issue's targets (PASS/FAIL, never an assertion: exit 0)
and writes benchmarks/results/serving.json. The servers import a copy of fraud/ and serving/
taken at the start, and are stopped (process groups) on the way out, on Ctrl-C and on SIGTERM.

    python benchmarks/serving/run.py                 # about 3-3.5 minutes
    python -m benchmarks.serving --duration 5        # shorter runs
    python benchmarks/serving/run.py --configs B,C --concurrency 1,8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console
from rich.markup import escape

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project, for `python <this>`

from benchmarks.common.machine import (
    busy_cpu_s,
    command_output,
    machine_info,
    own_cpu_s,
    steal_cpu_s,
    wait_for_idle,
)
from benchmarks.common.project import RESULTS_DIR, ROOT, git_dirty, git_head, offline_env
from benchmarks.common.report import (
    command_line,
    fmt_ms,
    fmt_ratio,
    markdown_table,
    rich_table,
    verdict,
    write_results,
)
from benchmarks.serving.procs import (
    Service,
    free_port,
    http_status,
    http_text,
    redis_command,
    redis_service,
)
from benchmarks.serving.wrk import (
    BODIES_LUA,
    TRANSACTIONS_LUA,
    WrkResult,
    run_wrk,
    wrk_path,
)

# The targets.
TARGET_A_RPS_C8 = 2500.0
TARGET_A_P99_MS_C8 = 10.0
TARGET_A_OVER_C_C8 = 6.0
TARGET_P50_MS_C1 = 1.0
TARGET_BATCH_TPS = 100_000.0

CONFIG_TITLES = {
    "A": "A: this service, {w} workers, Redis state",
    "B": "B: this service, 1 worker, in-process state",
    "C": "C: mlflow models serve, {w} workers",
}
PAYLOAD_NOTE = (
    "A and B get the raw transaction (5 fields) and compute the 23 features online, then log "
    "the prediction to SQLite; C (MLflow) gets the ready 23-feature vector and logs nothing but "
    "its access log. The comparison favours MLflow."
)

console = Console(width=None if sys.stdout.isatty() else 160)


# ============================================================================================
# Results


@dataclass
class ConfigResult:
    key: str  # A, B or C
    title: str
    status: str = "not run"  # ok | failed to start | skipped | not run
    valid: bool = True  # False: the figures do not measure what the title says
    startup_s: float | None = None
    command: list[str] = field(default_factory=list)
    warmup: WrkResult | None = None
    runs: list[WrkResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # warning lines from the server's log
    log_tail: str | None = None  # on a start-up failure

    def at(self, connections: int) -> WrkResult | None:
        return next((r for r in self.runs if r.connections == connections), None)


@dataclass
class Extras:
    on: str | None = None  # the configuration they ran on (A or B)
    plain_c: int | None = None  # concurrency of the plain run the explain run is compared to
    explain: WrkResult | None = None
    #: /predict/batch on each of our configurations (A with its workers and Redis, B)
    batches: dict[str, WrkResult] = field(default_factory=dict)
    mlflow_batch: WrkResult | None = None

    @property
    def batch_on(self) -> str | None:
        """The configuration whose batch run scored the most transactions per second."""
        valid = {k: r for k, r in self.batches.items() if r.ok}
        pool = valid or self.batches
        return max(pool, key=lambda k: pool[k].tps) if pool else None

    @property
    def batch(self) -> WrkResult | None:
        return self.batches[self.batch_on] if self.batch_on else None


@dataclass
class Target:
    what: str
    measured: str
    verdict: str  # PASS | FAIL | n/a | info
    note: str = ""


# ============================================================================================
# Model version and payloads


@dataclass
class Payloads:
    model_name: str
    version: str
    features: list[str]
    history_rows: int
    history_end: str
    t0: int  # first TX_DATETIME sent (epoch seconds): just after the published history
    customers: int
    terminals: int
    mlflow_rows: Path  # one {"dataframe_split"} body with 1 row per line
    mlflow_batch: Path  # one body with batch_size rows


def resolve_version(name: str, alias: str, version: str | None) -> str:
    """The version both sides serve: `version`, else the one `alias` points at now."""
    from fraud import registry

    return registry.resolve_version(name, alias=alias, version=version)


def prepare_payloads(name: str, version: str, workdir: Path, batch_size: int) -> Payloads:
    """The model's input columns, and MLflow request bodies made of real feature vectors: the
    last transactions of the history published with the version, featurised with the project's
    own definitions (`fraud.features.compute_features`)."""
    import pandas as pd

    from fraud import registry
    from fraud.features import compute_features

    dst = workdir / "artifacts"
    model = registry.download_version(name, version=version, dest=dst)
    features = model.features
    history = pd.read_parquet(dst / registry.FEATURE_HISTORY_FILE)
    cfg = model.feature_config
    end = pd.Timestamp(history["TX_DATETIME"].max())
    tail = compute_features(history, cfg).tail(max(batch_size, 1000))[features]
    rows = [
        [None if isinstance(v, float) and not math.isfinite(v) else v for v in row]
        for row in tail.astype(float).itertuples(index=False, name=None)
    ]

    def body(data: list[list[Any]]) -> str:
        return json.dumps(
            {"dataframe_split": {"columns": features, "data": data}}, separators=(",", ":")
        )

    single = workdir / "mlflow_rows.jsonl"
    single.write_text("".join(body([r]) + "\n" for r in rows))
    batch_rows = (rows * (batch_size // len(rows) + 1))[:batch_size]
    batch = workdir / "mlflow_batch.jsonl"
    batch.write_text(body(batch_rows) + "\n")
    return Payloads(
        model_name=name,
        version=version,
        features=features,
        history_rows=len(history),
        history_end=end.isoformat(),
        t0=int(end.timestamp()) + 1,  # naive timestamps are UTC in this project
        customers=int(history["CUSTOMER_ID"].max()) + 1,
        terminals=int(history["TERMINAL_ID"].max()) + 1,
        mlflow_rows=single,
        mlflow_batch=batch,
    )


class Sequence:
    """Hands out disjoint transaction sequence ranges, one per wrk run on our service: ids
    never repeat and datetimes only move forward, across runs and across servers."""

    def __init__(self) -> None:
        self.next = 0

    def advance(self, r: WrkResult) -> None:
        if r.requests == 0 and r.wrk_rc != 0:
            self.next += 10**8  # unknown count: jump far
            return
        # Requests sent but not completed when wrk stopped: at most one per connection.
        sent = r.requests + r.connections + 1
        self.next += sent * r.threads * r.per_request + 1000


# ============================================================================================
# Running


def measured(run: Callable[[], WrkResult], services: list[Service]) -> WrkResult:
    """Run wrk and account for the CPU: the servers', wrk's and everybody else's."""
    busy0, own0, steal0 = busy_cpu_s(), own_cpu_s(), steal_cpu_s()
    before = [s.cpu_by_pid() for s in services]
    r = run()
    r.steal_cpu_s = steal_cpu_s() - steal0
    after = [s.cpu_by_pid() for s in services]
    deltas = [
        {pid: t - b.get(pid, 0.0) for pid, t in a.items()}
        for a, b in zip(after, before, strict=True)
    ]
    r.server_cpu_s = sum(sum(d.values()) for d in deltas)
    if deltas and r.elapsed_s > 0:
        # The busiest processes of the server itself (its workers), in cores: with a shared
        # listening socket the kernel decides which worker gets each connection, and a few
        # long-lived wrk connections can all land on one worker.
        busy = sorted((t / r.elapsed_s for t in deltas[0].values()), reverse=True)
        r.server_process_cores = [round(c, 2) for c in busy if c >= 0.02]
        workers = services[0].workers
        working = sum(c >= 0.1 for c in busy)
        if workers > 1 and r.connections >= workers and r.requests and working < workers:
            r.uneven = True
            r.notes.append(
                f"uneven: {working} of {workers} workers did the work; the kernel gave wrk's "
                f"{r.connections} connections to fewer workers (they keep them for the run), so "
                "this figure is for fewer workers than configured"
            )
    own = own_cpu_s() - own0
    r.other_cpu_s = max(busy_cpu_s() - busy0 - r.server_cpu_s - r.wrk_cpu_s - own, 0.0)
    return r


def status_counts(base_url: str) -> dict[str, float]:
    """Responses by status from our /metrics (with several workers: one worker's view)."""
    text = http_text(f"{base_url}/metrics") or ""
    counts: dict[str, float] = {}
    for m in re.finditer(r"^fraud_api_requests_total\{([^}]*)\}\s+([\d.e+]+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("method") == "POST":
            key = f"{labels.get('endpoint')} {labels.get('status')}"
            counts[key] = counts.get(key, 0.0) + float(m.group(2))
    return counts


def log_problems(lines: list[str], limit: int = 12) -> list[str]:
    """What went wrong in a server's log, condensed: each traceback as its exception line (with
    the last frame in this project's code, if any), and warning or error lines; counted."""
    found: dict[str, int] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Traceback (most recent call last):"):
            where = ""
            i += 1
            while i < len(lines) and lines[i][:1] in (" ", "\t"):
                m = re.match(r'\s+File "([^"]+)", line (\d+), in (\S+)', lines[i])
                if m and "site-packages" not in m.group(1) and "/lib/python" not in m.group(1):
                    path = Path(m.group(1))
                    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                    where = f" (at {shown}:{m.group(2)} in {m.group(3)})"
                i += 1
            exc = lines[i].strip() if i < len(lines) else "(truncated)"
            key = f"traceback: {exc}{where}"
        elif re.search(r"warn|deprecat|error|exception", line, re.I):
            key = re.sub(r"^\d{4}[/-]\d\d[/-]\d\d[ T][\d:.,]+\s*", "", line).strip()
            key = re.sub(r"\[\d+\]|\b\d+:[MCS] \d\d \w+ \d{4} [\d:.]+", "", key)
        else:
            key = ""
        if key:
            found[key] = found.get(key, 0) + 1
        i += 1
    return [f"{n} x {k}" if n > 1 else k for k, n in list(found.items())[:limit]]


def log_warnings(svc: Service) -> list[str]:
    return log_problems(svc.log_lines())


CODE_DIRS = ("fraud", "serving")


def snapshot_code(tmp: Path) -> Path:
    """Copy the service's packages (fraud/, serving/) into `tmp/code`: the servers import that
    copy (PYTHONPATH), so every configuration of one run measures the same code, whatever is
    edited in the working tree meanwhile."""
    code = tmp / "code"
    for name in CODE_DIRS:
        shutil.copytree(
            ROOT / name, code / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    return code


def base_env(tmp: Path) -> dict[str, str]:
    """The servers' environment: the project's offline defaults (its MLflow store unless
    MLFLOW_TRACKING_URI says otherwise), this environment but its FRAUD_* settings, and the
    snapshot first on PYTHONPATH."""
    env = {
        **offline_env(ROOT),
        **{k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")},
    }
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env.update(
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(
            [str(tmp / "code"), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
        ),
        TMPDIR=str(tmp),
    )
    return env


def use_registry_env(env: dict[str, str]) -> None:
    """This process's MLflow settings (the registry, no telemetry, no progress bars) from the
    servers' `env`, unless already set: the payloads read the same registry as the servers."""
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY"):
        os.environ.setdefault(k, env[k])
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def service_env(
    env: dict[str, str], d: Path, p: Payloads, store: str, batch_size: int
) -> dict[str, str]:
    """`env` with our service's settings: the model version, its cache, log and feature state
    under `d`, no alias poll, batches of `batch_size` allowed."""
    return {
        **env,
        "FRAUD_MODEL_NAME": p.model_name,
        "FRAUD_MODEL_VERSION": p.version,
        "FRAUD_MODEL_CACHE_DIR": str(d / "model"),
        "FRAUD_PREDICTION_LOG": str(d / "predictions.sqlite"),
        "FRAUD_FEATURE_STORE": store,
        "FRAUD_RELOAD_POLL_SECONDS": "0",
        "FRAUD_MAX_BATCH": str(max(1000, batch_size)),
        "FRAUD_MAX_BODY_BYTES": str(max(1_000_000, 200 * batch_size)),
    }


class Bench:
    """Runs the configurations one after the other; only one server is under load at a time."""

    def __init__(self, args: argparse.Namespace, tmp: Path, payloads: Payloads) -> None:
        self.args = args
        self.tmp = tmp
        self.payloads = payloads
        self.env = base_env(tmp)
        self.seq = Sequence()
        self.stack = contextlib.ExitStack()
        self.results: dict[str, ConfigResult] = {}
        self.extras = Extras()
        self.live: dict[str, tuple[Service, list[Service], str]] = {}  # key -> svc, cpu, url

    # -- servers ----------------------------------------------------------------------------
    def start(
        self, svc: Service, res: ConfigResult, consecutive: int = 3, what: str | None = None
    ) -> bool:
        if what is None:
            res.command = svc.cmd
        console.print(f"[bold]{escape(what or res.title)}[/]: starting ...")
        svc.start()
        self.stack.callback(svc.stop)
        why = svc.wait_ready(self.args.start_timeout, consecutive)
        if why is None:
            if what is None:
                res.startup_s = svc.startup_s
            console.print(f"  ready in {svc.startup_s:.1f} s")
            return True
        res.status = "failed to start"
        res.log_tail = svc.log_tail(30)
        res.notes.append(f"failed to start: {why}")
        console.print(f"  [bold red]failed to start[/]: {why}; the tail of its log:")
        console.print(escape(res.log_tail or "(empty log)"), style="dim", highlight=False)
        svc.stop()
        return False

    def ours(self, key: str) -> None:
        a = self.args
        workers = a.workers if key == "A" else 1
        res = ConfigResult(key, CONFIG_TITLES[key].format(w=workers))
        self.results[key] = res
        d = self.tmp / key
        (d / "tmp").mkdir(parents=True)
        cpu: list[Service] = []
        store = "memory"
        redis_port = None
        if key == "A":
            redis_port = free_port()
            redis = redis_service(redis_port, d)
            res.notes.append(f"redis-server on 127.0.0.1:{redis_port}, no persistence")
            if not self.start(redis, res, consecutive=1, what=f"{key}: redis-server"):
                res.notes.append("redis-server did not start (is it installed?)")
                return
            cpu.append(redis)
            store = f"redis://127.0.0.1:{redis_port}/0"
        port = free_port()
        env = {
            **service_env(self.env, d, self.payloads, store, a.batch_size),
            "TMPDIR": str(d / "tmp"),
        }
        cmd = [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", str(workers)]
        url = f"http://127.0.0.1:{port}"
        svc = Service(
            key,
            cmd,
            env=env,
            cwd=d,
            log_path=d / "server.log",
            ready=lambda: http_status(f"{url}/ready") == 200,
            workers=workers,
        )
        if not self.start(svc, res, consecutive=3 * workers):
            for s in cpu:
                s.stop()
            return
        cpu.insert(0, svc)
        res.status = "ok"
        res.warmup = self.run_ours(
            f"{key} warm-up", url, "/predict", 8, a.warmup, cpu, retry_uneven=False
        )
        if key == "A" and redis_port is not None:
            keys = redis_command(redis_port, "DBSIZE")
            n = int(keys) if keys and keys.isdigit() else 0
            if n == 0:
                res.valid = False
                res.notes.append(
                    "Redis holds no keys after the warm-up: this build ignores "
                    "FRAUD_FEATURE_STORE, each worker keeps its own in-process state. A's "
                    "figures are pending the Redis feature store."
                )
                console.print(f"  [yellow]{res.notes[-1]}[/]")
            else:
                res.notes.append(f"Redis holds {n:,} keys after the warm-up")
        for c in a.concurrency:
            res.runs.append(self.run_ours(key, url, "/predict", c, a.duration, cpu))
        res.warnings = log_warnings(svc)
        self.live[key] = (svc, cpu, url)

    def run_ours(
        self,
        label: str,
        url: str,
        path: str,
        connections: int,
        duration: float,
        cpu: list[Service],
        batch: int = 0,
        retry_uneven: bool = True,
    ) -> WrkResult:
        p, a = self.payloads, self.args

        def once() -> WrkResult:
            args = [self.seq.next, a.step, p.t0, batch, a.threads, p.customers, p.terminals]
            r = measured(
                lambda: run_wrk(
                    label,
                    url + path,
                    TRANSACTIONS_LUA,
                    [f"{x:g}" if isinstance(x, float) else str(x) for x in args],
                    connections=connections,
                    duration_s=duration,
                    threads=a.threads,
                    timeout_s=a.timeout,
                    per_request=max(batch, 1),
                ),
                cpu,
            )
            self.seq.advance(r)  # fresh ids and later datetimes for the next run
            if not r.ok:
                counts = status_counts(url)
                bad = {k: v for k, v in counts.items() if not k.split()[-1].startswith("2")}
                if bad:
                    r.notes.append(
                        "statuses so far (one worker's /metrics): "
                        + ", ".join(f"{k}: {v:.0f}" for k, v in sorted(bad.items()))
                    )
            self.report(r)
            return r

        return self.retrying(once, retry_uneven)

    def retrying(self, once: Callable[[], WrkResult], retry_uneven: bool = True) -> WrkResult:
        """Run; while fewer workers than configured did the work (the kernel's placement of
        wrk's connections), run again, up to --uneven-retries times. The discarded attempts
        are kept in the result (`discarded`) and said in its notes."""
        tries = self.args.uneven_retries + 1 if retry_uneven else 1
        discarded: list[WrkResult] = []
        r = once()
        while r.uneven and len(discarded) + 1 < tries:
            console.print("    [yellow]uneven: running it again[/]")
            discarded.append(r)
            r = once()
        if discarded:
            r.discarded = [
                {
                    "rps": d.rps,
                    "p50_ms": d.p50_ms,
                    "p99_ms": d.p99_ms,
                    "server_process_cores": d.server_process_cores,
                }
                for d in discarded
            ]
            r.notes.append(
                f"{len(discarded)} uneven attempt(s) discarded before this one: "
                + ", ".join(f"{d.rps:,.0f} req/s" for d in discarded)
            )
        return r

    def mlflow(self) -> None:
        a, p = self.args, self.payloads
        res = ConfigResult("C", CONFIG_TITLES["C"].format(w=a.workers))
        self.results["C"] = res
        d = self.tmp / "C"
        d.mkdir()
        port = free_port()
        cmd = [sys.executable, "-m", "mlflow", "models", "serve"]
        cmd += ["-m", f"models:/{p.model_name}/{p.version}", "--workers", str(a.workers)]
        cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
        url = f"http://127.0.0.1:{port}"
        svc = Service(
            "C",
            cmd,
            env={**self.env, "TMPDIR": str(d)},
            cwd=d,
            log_path=d / "server.log",
            ready=lambda: http_status(f"{url}/ping") == 200,
            workers=a.workers,
        )
        if not self.start(svc, res, consecutive=2 * a.workers):
            return
        res.status = "ok"
        inv = url + "/invocations"
        res.warmup = self.run_bodies(
            "C warm-up", inv, p.mlflow_rows, 8, a.warmup, [svc], retry_uneven=False
        )
        for c in a.concurrency:
            res.runs.append(self.run_bodies("C", inv, p.mlflow_rows, c, a.duration, [svc]))
        if not a.no_extras and not a.no_mlflow_batch:
            self.extras.mlflow_batch = self.run_bodies(
                f"C batch x{a.batch_size}",
                inv,
                p.mlflow_batch,
                a.batch_concurrency,
                a.duration,
                [svc],
                per_request=a.batch_size,
            )
        res.warnings = log_warnings(svc)
        svc.stop()

    def run_bodies(
        self,
        label: str,
        url: str,
        bodies: Path,
        connections: int,
        duration: float,
        cpu: list[Service],
        per_request: int = 1,
        retry_uneven: bool = True,
    ) -> WrkResult:
        a = self.args

        def once() -> WrkResult:
            r = measured(
                lambda: run_wrk(
                    label,
                    url,
                    BODIES_LUA,
                    [str(bodies)],
                    connections=connections,
                    duration_s=duration,
                    threads=a.threads,
                    timeout_s=a.timeout,
                    per_request=per_request,
                ),
                cpu,
            )
            self.report(r)
            return r

        return self.retrying(once, retry_uneven)

    def extras_on_fastest(self) -> None:
        """explain=true and the batch endpoint, on the faster of our valid configurations."""
        a = self.args
        candidates = [
            self.results[k]
            for k in ("A", "B")
            if k in self.live and self.results[k].valid and self.results[k].runs
        ]
        c_ref = 8 if 8 in a.concurrency else a.concurrency[-1]

        def speed(res: ConfigResult) -> float:
            r = res.at(c_ref)
            return r.rps if r and r.ok else 0.0

        if candidates and not a.no_extras:
            best = max(candidates, key=speed)
            # The batch on the other configuration first (the best one idles meanwhile), then
            # on the best one with the other stopped: one server busy at a time.
            for res in candidates:
                if res is not best:
                    self.extras.batches[res.key] = self.run_batch(res.key)
                    res.warnings = log_warnings(self.live[res.key][0])
                    self.stop_live(res.key)
            for k in list(self.live):
                if k != best.key:
                    self.stop_live(k)  # only one server up while measuring
            svc, cpu, url = self.live[best.key]
            self.extras.on = best.key
            self.extras.plain_c = c_ref
            console.print(f"[bold]extras on {best.key}[/] (the faster of ours at c={c_ref})")
            self.extras.explain = self.run_ours(
                f"{best.key} explain=true",
                url,
                "/predict?explain=true",
                a.explain_concurrency,
                a.duration,
                cpu,
            )
            self.extras.batches[best.key] = self.run_batch(best.key)
            best.warnings = log_warnings(svc)
        for k in list(self.live):
            self.stop_live(k)

    def run_batch(self, key: str) -> WrkResult:
        a = self.args
        _, cpu, url = self.live[key]
        return self.run_ours(
            f"{key} batch x{a.batch_size}",
            url,
            "/predict/batch",
            a.batch_concurrency,
            a.duration,
            cpu,
            batch=a.batch_size,
        )

    def stop_live(self, key: str) -> None:
        _, cpu, _ = self.live.pop(key)
        for s in cpu:
            s.stop()

    @staticmethod
    def report(r: WrkResult) -> None:
        lat = f"p50 {fmt_ms(r.p50_ms)} ms, p99 {fmt_ms(r.p99_ms)} ms"
        tx = f" ({r.tps:,.0f} tx/s)" if r.per_request > 1 else ""
        err = "" if r.ok else f", [bold red]errors: {escape(r.error_text())}[/]"
        console.print(
            f"  {escape(r.label)} c={r.connections}: {r.rps:,.0f} req/s{tx}, {lat}{err}",
            highlight=False,
        )
        for n in r.notes:
            console.print(f"    {escape(n)}", style="yellow")
        if r.wrk_rc != 0:
            console.print(escape(r.output[-1500:]), style="dim")


# ============================================================================================
# Reporting


def fmt_cores(r: WrkResult) -> str:
    """Server CPU in cores over the run, and how it splits over the busiest processes."""
    if r.elapsed_s <= 0:
        return "—"
    total = f"{r.server_cpu_s / r.elapsed_s:.2f}"
    split = r.server_process_cores
    cell = f"{total} ({' + '.join(f'{c:.2f}' for c in split)})" if len(split) > 1 else total
    return cell + (" UNEVEN" if r.uneven else "")


def ratio(a: WrkResult | None, b: WrkResult | None) -> float | None:
    if a is None or b is None or b.rps <= 0:
        return None
    return a.rps / b.rps


def result_rows(results: dict[str, ConfigResult]) -> list[list[str]]:
    """config, c, req/s, p50, p99, errors, vs C, server CPU per request."""
    out: list[list[str]] = []
    c_res = results.get("C")
    for key in ("A", "B", "C"):
        res = results.get(key)
        if res is None:
            continue
        title = res.title + ("" if res.valid else " [PENDING: no Redis, figures not valid]")
        if res.status != "ok":
            out.append([title, "—", "—", "—", "—", res.status.upper(), "—", "—", "—"])
            continue
        for r in res.runs:
            vs = (
                ratio(r, c_res.at(r.connections))
                if key != "C" and c_res and c_res.status == "ok"
                else None
            )
            out.append(
                [
                    title,
                    str(r.connections),
                    f"{r.rps:,.0f}",
                    fmt_ms(r.p50_ms),
                    fmt_ms(r.p99_ms),
                    "0" if r.ok else "FLAGGED: " + r.error_text(),
                    fmt_ratio(vs) if key != "C" else "1x",
                    fmt_ms(r.cpu_ms_per_request),
                    fmt_cores(r),
                ]
            )
    return out


def extras_rows(ex: Extras, results: dict[str, ConfigResult]) -> list[list[str]]:
    """what, c, req/s, tx/s, p50, p99, errors, compared with."""
    out: list[list[str]] = []
    plain = results[ex.on].at(ex.plain_c) if ex.on and ex.plain_c else None
    if ex.explain:
        r = ex.explain
        cmp = "—"
        if plain and r.rps > 0:
            cmp = (
                f"{plain.rps / r.rps:.2f}x the cost of plain /predict at c={plain.connections} "
                f"({plain.rps:,.0f} req/s, p50 {fmt_ms(plain.p50_ms)} ms)"
            )
        out.append(extras_row(f"{ex.on}: /predict?explain=true", r, cmp))
    for key, r in sorted(ex.batches.items()):
        cmp = "—"
        if ex.mlflow_batch and ex.mlflow_batch.tps > 0:
            cmp = f"{r.tps / ex.mlflow_batch.tps:.1f}x MLflow's {r.per_request}-row batch"
        out.append(extras_row(f"{key}: /predict/batch, {r.per_request} tx", r, cmp))
    if ex.mlflow_batch:
        r = ex.mlflow_batch
        out.append(extras_row(f"C: /invocations, {r.per_request}-row dataframe_split", r, "—"))
    return out


def extras_row(what: str, r: WrkResult, cmp: str) -> list[str]:
    return [
        what,
        str(r.connections),
        f"{r.rps:,.1f}" if r.rps < 100 else f"{r.rps:,.0f}",
        f"{r.tps:,.0f}",
        fmt_ms(r.p50_ms),
        fmt_ms(r.p99_ms),
        "0" if r.ok else "FLAGGED: " + r.error_text(),
        cmp,
    ]


def evaluate_targets(results: dict[str, ConfigResult], ex: Extras) -> list[Target]:
    out: list[Target] = []
    a, b, c = results.get("A"), results.get("B"), results.get("C")

    def a_unusable() -> str | None:
        if a is None:
            return "A not run"
        if a.status != "ok":
            return f"A {a.status} (see its log: is the Redis feature store there?)"
        if not a.valid:
            return "A ignores the Redis URL: pending the Redis feature store"
        return None

    # 1. A >= 2,500 req/s at c=8 with p99 < 10 ms
    what = f"A >= {TARGET_A_RPS_C8:,.0f} req/s at c=8 with p99 < {TARGET_A_P99_MS_C8:.0f} ms"
    a8 = a.at(8) if a else None
    why = a_unusable()
    if a8 is None:
        out.append(Target(what, "—", "n/a", why or "no c=8 run"))
    else:
        m = f"{a8.rps:,.0f} req/s, p99 {fmt_ms(a8.p99_ms)} ms"
        ok = a8.ok and a8.rps >= TARGET_A_RPS_C8 and (a8.p99_ms or math.inf) < TARGET_A_P99_MS_C8
        out.append(uneven_note(target(what, m, ok, a8, why), a8))

    # 2. A >= 6x C at c=8
    what = f"A >= {TARGET_A_OVER_C_C8:.0f}x C (MLflow) at c=8"
    c8 = c.at(8) if c and c.status == "ok" else None
    x = ratio(a8, c8)
    if x is None:
        out.append(Target(what, "—", "n/a", why or "no c=8 run of A and C"))
    else:
        m = f"{x:.1f}x ({a8.rps if a8 else 0:,.0f} vs {c8.rps if c8 else 0:,.0f} req/s)"
        ok = bool(a8 and c8 and a8.ok and c8.ok and x >= TARGET_A_OVER_C_C8)
        out.append(uneven_note(target(what, m, ok, a8 if a8 and not a8.ok else c8, why), a8, c8))

    # 3. single-request p50 < 1 ms at c=1, A or B
    what = f"single-request p50 < {TARGET_P50_MS_C1:.0f} ms at c=1 (B or A)"
    ones = [
        (res.key, r)
        for res in (b, a)
        if res and res.status == "ok" and res.valid
        for r in [res.at(1)]
        if r is not None and r.ok and r.p50_ms is not None
    ]
    if ones:
        key, r = min(ones, key=lambda kr: kr[1].p50_ms or math.inf)
        m = f"{key}: p50 {fmt_ms(r.p50_ms)} ms"
        others = [f"{k}: {fmt_ms(x.p50_ms)} ms" for k, x in ones if k != key]
        note = "; ".join(others)
        out.append(Target(what, m, verdict((r.p50_ms or math.inf) < TARGET_P50_MS_C1), note))
    else:
        out.append(Target(what, "—", "n/a", "no clean c=1 run of A or B"))

    # 4. batch > 100,000 tx/s
    what = f"/predict/batch > {TARGET_BATCH_TPS:,.0f} tx/s"
    if ex.batch is None:
        out.append(Target(what, "—", "n/a", "not run"))
    else:
        r = ex.batch
        m = f"{r.tps:,.0f} tx/s ({ex.batch_on}, c={r.connections}, {r.per_request} tx per request)"
        out.append(target(what, m, r.tps > TARGET_BATCH_TPS, r, None))

    # 5. explain cost (info)
    what = "cost of ?explain=true (per-prediction contributions)"
    plain = results[ex.on].at(ex.plain_c) if ex.on and ex.plain_c else None
    if ex.explain and plain and ex.explain.rps > 0:
        e = ex.explain
        m = f"{plain.rps / e.rps:.2f}x ({e.rps:,.0f} vs {plain.rps:,.0f} req/s)"
        note = f"p50 {fmt_ms(e.p50_ms)} vs {fmt_ms(plain.p50_ms)} ms, {ex.on}, c={e.connections}"
        if not e.ok:
            note += "; FLAGGED: " + e.error_text()
        out.append(Target(what, m, "info", note))
    else:
        out.append(Target(what, "—", "n/a", "not run"))
    return out


def target(what: str, m: str, ok: bool, r: WrkResult | None, pending: str | None) -> Target:
    if pending:
        return Target(what, m, "n/a", pending)
    if r is not None and not r.ok:
        return Target(what, m, "FAIL", "the run had errors: " + r.error_text())
    return Target(what, m, verdict(ok))


def uneven_note(t: Target, *runs: WrkResult | None) -> Target:
    """Say when a run behind a target had fewer busy workers than configured."""
    for r in runs:
        if r is not None and r.uneven:
            note = f"{r.label} c={r.connections}: fewer workers busy than configured, re-run"
            t.note = f"{t.note}; {note}" if t.note else note
    return t


RESULT_COLUMNS = [
    "config",
    "c",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "vs C",
    "CPU ms/req",
    "cores (per process)",
]
EXTRAS_COLUMNS = ["what", "c", "req/s", "tx/s", "p50 ms", "p99 ms", "errors", "compared with"]
TARGET_COLUMNS = ["target", "measured", "verdict", "note"]
TEXT_COLUMNS = {"errors", "note", "compared with", "verdict"}


# ============================================================================================
# CLI


def int_list(text: str) -> list[int]:
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,8,64: {text!r}") from e
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be >= 1")
    return values


def config_list(text: str) -> list[str]:
    keys = [x.strip().upper() for x in text.split(",") if x.strip()]
    if not keys or any(k not in CONFIG_TITLES for k in keys):
        raise argparse.ArgumentTypeError(f"choose among A, B, C: {text!r}")
    return keys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/serving/run.py",
        description="Benchmark the prediction API against `mlflow models serve` on the same "
        "registered model version, with wrk: A = this service, --workers N and the Redis "
        "feature state; B = this service, 1 worker, in-process state; C = mlflow models serve, "
        "--workers N. Then ?explain=true on the faster of A and B, /predict/batch on each (and a "
        "batch to MLflow). Prints tables and PASS/FAIL against the issue's targets (always "
        "exits 0 once it has run) and writes JSON. " + PAYLOAD_NOTE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--configs",
        type=config_list,
        default="A,B,C",
        metavar="LIST",
        help="which configurations to run, comma-separated (A,B,C)",
    )
    p.add_argument(
        "--concurrency",
        type=int_list,
        default="1,8,64",
        metavar="LIST",
        help="wrk connection counts (-c), comma-separated",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (-d)")
    p.add_argument(
        "--warmup", type=float, default=3.0, help="seconds of warm-up at c=8 per configuration"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="wrk threads (-t; capped at the connections)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="wrk's per-request timeout, seconds (slower responses count as socket timeouts)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="worker processes of A and of C (B has 1)"
    )
    p.add_argument("--model-name", default="fraud-detector", help="registered model (both sides)")
    p.add_argument(
        "--model-alias",
        default="champion",
        help="alias resolved once to a version; both sides serve that version",
    )
    p.add_argument("--model-version", default=None, help="serve this version instead of the alias")
    p.add_argument(
        "--step",
        type=float,
        default=0.1,
        help="seconds of TX_DATETIME between consecutive transactions sent to A/B",
    )
    p.add_argument(
        "--uneven-retries",
        type=int,
        default=2,
        help="with several workers, run a measurement again (up to this many times) when fewer "
        "workers than configured did the work: the kernel hands each of wrk's long-lived "
        "connections to one worker, and at c=8 often all to the same one (0: keep the first run)",
    )
    p.add_argument(
        "--explain-concurrency", type=int, default=8, help="connections for ?explain=true"
    )
    p.add_argument(
        "--batch-size", type=int, default=1000, help="transactions per /predict/batch request"
    )
    p.add_argument(
        "--batch-concurrency",
        type=int,
        default=4,
        help="connections for the batch runs (with 2 workers, 2 connections often land on the "
        "same worker)",
    )
    p.add_argument(
        "--no-extras", action="store_true", help="skip the explain and batch measurements"
    )
    p.add_argument(
        "--no-mlflow-batch", action="store_true", help="skip the 1000-row batch to MLflow"
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=90.0,
        help="seconds to wait for a server to become ready before reporting it failed",
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for the 1-minute load average to drop below 0.5",
    )
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default: benchmarks/results/serving.json, git-ignored)",
    )
    p.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    p.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary directory (logs, stores)"
    )
    args = p.parse_args(argv)
    args.json = args.json or RESULTS_DIR / "serving.json"
    for name in ("duration", "warmup", "timeout", "step", "start_timeout"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.uneven_retries < 0:
        p.error("--uneven-retries must be >= 0")
    for name in ("threads", "workers", "explain_concurrency", "batch_size", "batch_concurrency"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def estimate_s(args: argparse.Namespace) -> float:
    per_config = float(args.warmup + args.duration * len(args.concurrency))
    total = per_config * len(args.configs) + 15 * len(args.configs)  # start-up, roughly
    if not args.no_extras:
        total += 2 * args.duration + (args.duration if "C" in args.configs else 0)
    return total + 10


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM/SIGHUP end the run like Ctrl-C: the finally blocks stop every server."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not wrk_path():
        console.print("[bold red]wrk not found[/]: apt-get install wrk")
        return 2
    wait_for_idle(console, 0.5, args.wait_idle)
    t_start = time.perf_counter()
    machine = {
        **machine_info(("mlflow", "uvicorn", "fastapi", "xgboost-cpu", "redis")),
        "wrk": command_output(["wrk", "-v"]).splitlines()[0] if wrk_path() else None,
        "redis_server": command_output(["redis-server", "--version"]) or None,
        "git_head": git_head(),
        "serving_files_dirty": git_dirty(["serving", "fraud"]),
    }
    load_before = os.getloadavg()
    console.print(
        f"load average {load_before[0]:.2f} on {os.cpu_count()} CPUs; "
        f"expected duration about {estimate_s(args) / 60:.1f} min"
    )
    if load_before[0] > 0.5:
        console.print("[yellow]the machine is busy: the figures will be low[/]")
    console.print(f"[dim]{PAYLOAD_NOTE}[/]")
    tmp = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    try:
        with terminate_as_exit():
            bench = measure(args, tmp)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]: the servers this run started are stopped")
        return 130
    finally:
        if args.keep_tmp:
            console.print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, bench, machine, load_before, t_start)
    return 0


def measure(args: argparse.Namespace, tmp: Path) -> Bench:
    """Every configuration, one after the other; every server is stopped on the way out."""
    code = snapshot_code(tmp)
    sys.path.insert(0, str(code))  # this process's own `fraud` import (payloads) too
    use_registry_env(base_env(tmp))
    version = resolve_version(args.model_name, args.model_alias, args.model_version)
    payloads = prepare_payloads(args.model_name, version, tmp, args.batch_size)
    console.print(
        f"model {args.model_name} v{version}"
        + ("" if args.model_version else f" (@{args.model_alias})")
        + f", {len(payloads.features)} features; history ends {payloads.history_end}, "
        f"transactions start 1 s later, {args.step:g} s apart"
    )
    bench = Bench(args, tmp, payloads)
    with bench.stack:
        for key in ("B", "A"):
            if key in args.configs:
                bench.ours(key)
        bench.extras_on_fastest()
        if "C" in args.configs:
            bench.mlflow()
    return bench


def report(
    args: argparse.Namespace,
    bench: Bench,
    machine: dict[str, Any],
    load_before: tuple[float, float, float],
    t_start: float,
) -> None:
    """Print the tables and the target checks; write the JSON."""
    payloads, version = bench.payloads, bench.payloads.version
    results, ex = bench.results, bench.extras
    load_after = os.getloadavg()

    rows = result_rows(results)
    title = (
        f"Serving: wrk -t{args.threads}, {args.duration:g} s per run, model v{version}; load "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs"
    )
    console.print(rich_table(title, RESULT_COLUMNS, rows, text_columns=TEXT_COLUMNS))
    erows = extras_rows(ex, results)
    if erows:
        console.print(
            rich_table("Explain and batch", EXTRAS_COLUMNS, erows, text_columns=TEXT_COLUMNS)
        )
    targets = evaluate_targets(results, ex)
    trows = [[t.what, t.measured, t.verdict, t.note] for t in targets]
    console.print(
        rich_table("Targets (the issue)", TARGET_COLUMNS, trows, left=2, text_columns=TEXT_COLUMNS)
    )
    console.print(f"[dim]{PAYLOAD_NOTE}[/]")
    for res in results.values():
        for n in res.notes:
            console.print(f"{res.key}: {escape(n)}", highlight=False)
        if res.startup_s is not None:
            console.print(f"{res.key}: ready {res.startup_s:.1f} s after start", highlight=False)
        for w in res.warnings:
            console.print(f"{res.key} log: {escape(w)}", style="yellow", highlight=False)
    busy = [
        r
        for res in results.values()
        for r in res.runs
        if r.other_cpu_s > 0.1 * r.duration_s * (os.cpu_count() or 1)
    ]
    if busy:
        console.print(
            "[yellow]other processes used more than 10% of the machine during: "
            + ", ".join(f"{r.label} c={r.connections}" for r in busy)
            + "[/]"
        )
    if args.markdown:
        print(markdown_table(RESULT_COLUMNS, rows, text_columns=TEXT_COLUMNS))
        print()
        if erows:
            print(markdown_table(EXTRAS_COLUMNS, erows, text_columns=TEXT_COLUMNS))
            print()
        print(markdown_table(TARGET_COLUMNS, trows, text_columns=TEXT_COLUMNS))

    def run_json(r: WrkResult | None) -> dict[str, Any] | None:
        if r is None:
            return None
        d = asdict(r)
        d.update(
            p50_ms=r.p50_ms,
            p99_ms=r.p99_ms,
            errors=r.errors,
            ok=r.ok,
            tps=r.tps,
            cpu_ms_per_request=r.cpu_ms_per_request,
        )
        return d

    out = {
        "command": command_line(),
        "machine": machine,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "elapsed_s": time.perf_counter() - t_start,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": {
            "name": args.model_name,
            "version": version,
            "features": payloads.features,
            "history_rows": payloads.history_rows,
            "history_end": payloads.history_end,
            "first_tx_epoch_s": payloads.t0,
            "customers": payloads.customers,
            "terminals": payloads.terminals,
        },
        "payloads": PAYLOAD_NOTE,
        "configs": {
            k: {
                **{f: v for f, v in asdict(res).items() if f not in ("runs", "warmup")},
                "warmup": run_json(res.warmup),
                "runs": [run_json(r) for r in res.runs],
            }
            for k, res in results.items()
        },
        "extras": {
            "on": ex.on,
            "plain_concurrency": ex.plain_c,
            "explain": run_json(ex.explain),
            "batch": run_json(ex.batch),
            "batch_on": ex.batch_on,
            "batches": {k: run_json(r) for k, r in ex.batches.items()},
            "mlflow_batch": run_json(ex.mlflow_batch),
        },
        "targets": {
            "A_rps_c8": TARGET_A_RPS_C8,
            "A_p99_ms_c8": TARGET_A_P99_MS_C8,
            "A_over_C_c8": TARGET_A_OVER_C_C8,
            "p50_ms_c1": TARGET_P50_MS_C1,
            "batch_tps": TARGET_BATCH_TPS,
        },
        "table": [dict(zip(RESULT_COLUMNS, r, strict=True)) for r in rows],
        "checks": [asdict(t) for t in targets],
    }
    shown = write_results(args.json, out)
    console.print(f"wrote {shown} in {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
