"""Helpers the test modules share: sweep commands, MLflow stores and servers, processes, waiting."""
from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import http.server
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from mlflow.tracking import MlflowClient

from imdb_ray.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
# MLflow 3.17 servers start a job runner and seven huey consumers (~275 MB each) unless told not to:
# on 2 cores that is seconds of start-up per server, for features (GenAI jobs) nothing here uses.
SERVER_ENV = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@functools.cache  # once per test process
def _empty_store() -> Path:
    folder = tempfile.mkdtemp(prefix="imdb_ray_store_template_")
    atexit.register(shutil.rmtree, folder, True)
    template = Path(folder) / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()
    return template


def fresh_store(folder: Path, name: str = "mlflow.db") -> str:
    """The URI of an MLflow sqlite store in `folder`: a copy of an empty one this process made, unless
    the file exists. MLflow spends ~1.6 s of CPU creating a new store's tables, and the suite makes
    dozens of stores; the code that creates them runs once per test process here, and in every run of
    `make quickstart` and of the tests that name no store."""
    db = Path(folder) / name
    if not db.exists():
        shutil.copyfile(_empty_store(), db)
    return f"sqlite:///{db}"


def sweep_command(workdir: Path, sweep_file: Path, *extra: str, uri: str | None = None, address: str | None = None) -> list[str]:
    """`python -m imdb_ray sweep FILE` with storage, store and cache inside workdir; on `address`'s
    Ray when given (the shared test cluster), else on a local Ray of its own."""
    return [sys.executable, "-m", "imdb_ray", "sweep", str(sweep_file), "--storage", str(workdir / "ray"),
            "--tracking-uri", uri or fresh_store(workdir), "--cache-dir", str(workdir / "cache"),
            *(["--address", address] if address else []), *extra]


def run_sweep(workdir: Path, sweep_file: Path, *extra: str, address: str | None = None, timeout: float = 600,
              env: dict | None = None) -> str:
    proc = subprocess.run(sweep_command(workdir, sweep_file, *extra, address=address), cwd=workdir, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def write_sweep(folder: Path, name: str, space: dict, grids: dict | None = None, **settings) -> Path:
    """A sweep file: `space` as literals, `grids` as tune.grid_search lists."""
    entries = [f"{k!r}: {v!r}" for k, v in space.items()] + [f"{k!r}: tune.grid_search({v!r})" for k, v in (grids or {}).items()]
    path = folder / f"{name}.py"
    path.write_text("from ray import tune\nfrom imdb_ray.sweep import Sweep\n"
                    f"sweep = Sweep(name={name!r}, space={{{', '.join(entries)}}}, **{settings!r})\n")
    return path


def sweep_runs(uri: str, experiment: str, stage: str = "search") -> tuple[MlflowClient, list, list]:
    """(client, parent runs, child runs of `stage`: the search's trials, or "confirm": the confirmation reruns)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return (client, [r for r in runs if r.data.tags.get("imdb_ray.kind") == "sweep"],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags and r.data.tags.get("imdb_ray.stage", "search") == stage])


def steps(client: MlflowClient, run, metric: str = "val_accuracy") -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, metric)]


def max_step(db: Path) -> int:
    """The highest epoch any trial has logged, read straight from a sqlite store (0 if none yet)."""
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("select coalesce(max(step), 0) from metrics where key='val_accuracy'").fetchone()[0]
    except sqlite3.Error:
        return 0


def actors_started(cluster, since: float) -> collections.Counter:
    """Actor classes started on a test Ray (ray.cluster_utils.Cluster) since `since` (time.time()): each
    actor's worker writes ':actor_name:<class>' to its log when it becomes that actor."""
    logs = Path(cluster.head_node.get_session_dir_path()) / "logs"
    return collections.Counter(line.split(":actor_name:")[1].strip() for f in logs.glob("worker-*.out") if f.stat().st_mtime >= since
                               for line in f.read_text(errors="replace").splitlines() if line.startswith(":actor_name:"))


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.stdout.read()[-3000:] if proc.stdout else ''}")
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for a process started with start_new_session=True; kill its whole group if it hangs."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return out


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler] = http.server.BaseHTTPRequestHandler) -> Iterator[str]:
    """A local HTTP server on a free port, served from a thread and silent: its HOST:PORT, stopped afterwards."""
    quiet = type("Quiet", (handler,), {"log_message": lambda *args: None})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def mlflow_server(db: Path, port: int, cwd: Path) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1:port over a sqlite file, up when this returns."""
    log = cwd / f"mlflow-server-{port}.log"  # quoted if it never comes up
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}", "--host",
                                 "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=SERVER_ENV)
    # ~12 s here with one other job on the cores; a CI run that shared them with two took over 60 s once
    deadline = time.time() + 240
    while not port_open(port):
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail(f"the MLflow server on port {port} {'exited' if proc.poll() is not None else 'did not open it in 240 s'}: "
                        f"{log.read_text()[-2000:]}")
        time.sleep(0.3)
    return proc


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below folder (but the MLflow store, which a check may open) and its content hash."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith("mlflow.db")}


def cli(argv: list[str], capsys) -> tuple[int, list[str], str]:
    """`python -m imdb_ray ARGV` in this process: (exit code, stderr lines, stdout)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors exit from inside the parser
        code = e.code
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


# The reliability record: one file per row, in a folder conftest creates for the session (its path in
# this variable), so rows from several test modules make one results/reliability.md.
ROWS_ENV = "IMDB_RAY_RELIABILITY_ROWS"


def record_row(section: str, case: str, what: str, lost: str) -> None:
    """One row of results/reliability.md: what a reliability test tried, saw happen, and lost."""
    import json
    import uuid

    folder = os.environ.get(ROWS_ENV)
    if folder:
        order = sys._getframe(1).f_code.co_firstlineno  # the calling test's place in its module
        row = {"section": section, "case": case, "what": what, "lost": lost, "order": order}
        (Path(folder) / f"{uuid.uuid4().hex}.json").write_text(json.dumps(row))


def code_span(text: str) -> str:
    """`text` as Markdown inline code; fenced by two backticks when it holds one (an error that quotes a command)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def recorded_rows() -> list[dict]:
    import json

    folder = os.environ.get(ROWS_ENV)
    return [json.loads(p.read_text()) for p in Path(folder).glob("*.json")] if folder else []
