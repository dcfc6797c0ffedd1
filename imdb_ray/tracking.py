"""MLflow: the one module that writes to it. No Ray here (Tune's callback in sweep/callbacks.py only
translates Tune's events into calls on `TrialLog`).

A sweep is one MLflow experiment holding one parent run per sweep and one nested child run per
trial. `SweepRuns` reads and writes the runs of a sweep; `TrialLog` writes a trial's run start,
per-epoch metrics and end, and keeps them in order while the store does not answer.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from imdb_ray.errors import UserError
from imdb_ray.redact import redact, redact_text, safe_params

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
RETRY_S = float(os.environ.get("IMDB_RAY_MLFLOW_RETRY_S", 10))  # how often a buffering TrialLog tries the store again
FINISH_WAIT_S = float(os.environ.get("IMDB_RAY_MLFLOW_WAIT_S", 30))  # at the end of a sweep, before giving up


def resolve_tracking_uri(uri: str | None) -> str:
    """Absolute sqlite paths: Tune trials and the UI may run from another working directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def check_reachable(uri: str) -> None:
    """Fail before any trial runs when the tracking store cannot be used."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables...": noise
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:
        raise UserError(f"MLflow tracking store {uri} is not reachable ({type(e).__name__}); "
                        "start the server or pass --tracking-uri sqlite:///mlflow.db") from None


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def error_summary(text: str) -> str:
    """The line of a traceback that says what went wrong ("OutOfMemoryError: ...")."""
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0].split(".")[-1]
        if head.endswith(("Error", "Exception", "Interrupt")) or head in ("Killed", "MemoryError"):
            return line[:300]
    return (lines[-1] if lines else "unknown error")[:300]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


# ------------------------------------------------------------------------------ a sweep's runs
@dataclass
class Tested:
    """One trial evaluated on test after the sweep: its metrics and the files written for it."""

    __test__ = False  # not a pytest class, whatever its name

    trial_id: str
    metrics: dict[str, float]
    files: dict[str, str]  # "predictions" (always), "model" (the best trial's bundle)
    is_best: bool
    model: str = ""
    val: float | None = None  # its best validation value, the one it was selected on


class SweepRuns:
    """The runs of one sweep (an MLflow experiment named after it): its parent and its trials."""

    def __init__(self, uri: str, experiment: str, client=None):
        self.uri, self.experiment = uri, experiment
        self.client = client or _client(uri)
        self._experiment_id: str | None = None

    def experiment_id(self) -> str | None:
        """The experiment's id (looked up once it exists: every trial start and test result needs it)."""
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            self._experiment_id = exp.experiment_id if exp else None
        return self._experiment_id

    def parent(self, experiment_path: str | None = None):
        """The newest parent run (of the sweep stored at experiment_path, when given), or None."""
        exp_id = self.experiment_id()
        if exp_id is None:
            return None
        where = (f"tags.`imdb_ray.experiment_path` = '{experiment_path}'" if experiment_path
                 else "tags.`imdb_ray.kind` = 'sweep'")
        runs = self.client.search_runs([exp_id], where, order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0] if runs else None

    def trials(self, parent_id: str, trial_id: str | None = None) -> list:
        """The child runs of a parent run (the one query for "runs of this sweep"), or of one trial."""
        exp_id = self.experiment_id()
        where = f"tags.`mlflow.parentRunId` = '{parent_id}'" + (f" and tags.trial_id = '{trial_id}'" if trial_id else "")
        return self.client.search_runs([exp_id], where, max_results=5000) if exp_id else []

    def start_parent(self, sweep_file: Path, settings: dict, experiment_path: str, command: str = "") -> str:
        """Create the sweep's parent run (and its experiment on first use); returns its id."""
        exp_id = self._experiment_id = self.experiment_id() or self.client.create_experiment(
            # "custom model development": MLflow's UI then opens on the runs table, not its GenAI pages
            self.experiment, tags={"mlflow.experimentKind": "custom_model_development"})
        run = self.client.create_run(exp_id, run_name=f"sweep:{self.experiment}",
                                     tags={"imdb_ray.kind": "sweep", "sweep_file": str(sweep_file),
                                           "git_commit": git_commit(), "imdb_ray.experiment_path": experiment_path,
                                           **({"imdb_ray.command": command} if command else {})})
        _log_params(self.client, run.info.run_id, settings)
        self.client.log_text(run.info.run_id, redact_text(sweep_file.read_text()), f"sweep/{sweep_file.name}")
        return run.info.run_id

    def reopen_parent(self, run_id: str) -> str:
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def finish_parent(self, run_id: str) -> None:
        self.client.set_terminated(run_id, "FINISHED")

    def tested_trial_ids(self, parent_id: str) -> set[str]:
        return {r.data.tags.get("trial_id") for r in self.trials(parent_id) if "test_accuracy" in r.data.metrics}

    def log_tested(self, parent_id: str, tested: list[Tested]) -> None:
        """Test metrics and predictions to each tested trial's run; the best's also to the parent, with its model."""
        for t in tested:
            if t.is_best:
                for k, v in t.metrics.items():
                    self.client.log_metric(parent_id, f"best_{k}", v)
            for run in self.trials(parent_id, t.trial_id)[:1]:
                run_id = run.info.run_id
                for k, v in t.metrics.items():
                    self.client.log_metric(run_id, k, v)
                self.client.log_artifact(run_id, t.files["predictions"])
                if "model" in t.files:
                    self.client.log_artifacts(run_id, t.files["model"], "model")
                if t.is_best:
                    self.client.set_tag(run_id, "best_trial", "true")

    def close_orphans(self, parent_id: str, trial_ids: set) -> int:
        """A driver killed between Tune's experiment snapshots loses trials that had already started;
        `--resume` samples replacements. Their child runs keep what they logged, marked KILLED."""
        orphans = [r for r in self.trials(parent_id) if r.data.tags.get("trial_id") not in trial_ids]
        for run in orphans:
            self.client.set_tag(run.info.run_id, "imdb_ray.orphaned",
                                "driver killed before Ray Tune snapshotted this trial; --resume ran a replacement")
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(orphans)

    def best_trial_run_id(self) -> str | None:
        """The best trial of this sweep's newest run that has one (what `predict sweep:NAME` loads)."""
        exp_id = self.experiment_id()
        runs = self.client.search_runs([exp_id], "tags.best_trial = 'true'", order_by=["attributes.start_time DESC"],
                                       max_results=1) if exp_id else []
        return runs[0].info.run_id if runs else None


def _log_params(client, run_id: str, params: dict[str, Any]) -> None:
    """Params in one request, secrets dropped (MLflow params are visible to everyone with the UI)."""
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)[:500]) for k, v in safe_params(params).items()])


# ------------------------------------------------------------------------------ a trial's run
# Ray Tune's own per-result keys: not ours to chart (they crowd the UI's metric lists); epoch, wall and
# device seconds are logged under our own names.
RAY_BOOKKEEPING = frozenset({"pid", "timestamp", "time_this_iter_s", "time_since_restore", "time_total_s",
                             "iterations_since_restore", "training_iteration"})


class TrialLog:
    """Writes each trial's child run: start (tags, params, config), one batch of metrics per epoch
    (the epoch is the step), end (status, wall and device seconds, error).

    When the tracking store stops answering mid-sweep, trials go on: every event is kept in order
    and written when the store answers again (tried every `retry_s`); `finish()` says what could
    not be written. A replayed epoch is written at most once (the store may have applied a request
    whose answer was lost), and an epoch a trial trains again after a restore from an older
    checkpoint is never written twice (the run gets the tag `imdb_ray.rerun_epochs`).
    """

    def __init__(self, uri: str, experiment: str, parent_id: str, devices: tuple[str, float] = ("CPU", 1.0), *,
                 client=None, retry_s: float = RETRY_S, clock: Callable[[], float] = time.monotonic):
        self.uri, self.parent_id, self.devices = uri, parent_id, devices
        self.runs = SweepRuns(uri, experiment, client)
        self.client = self.runs.client
        self.retry_s, self.clock = retry_s, clock
        self.pending: list[tuple[Callable, tuple]] = []
        self.run_ids: dict[str, str] = {}  # trial id -> its MLflow run
        self.last_step: dict[str, int] = {}
        self.reruns: dict[str, list[int]] = {}
        self.nodes: dict[str, str] = {}
        self.down_since: float | None = None
        self.last_try = -float("inf")

    # The events. Each is kept when it cannot be written now; none ever raises.
    def start(self, trial_id: str, name: str, config: dict) -> None:
        self._submit(self._start, trial_id, name, dict(config))

    def result(self, trial_id: str, result: dict, step: int) -> None:
        self._submit(self._result, trial_id, dict(result), step)

    def end(self, trial_id: str, *, failed: bool = False, error: str | None = None, wall: float | None = None,
            cut: str | None = None) -> None:
        self._submit(self._end, trial_id, failed, error, wall, cut)

    def _submit(self, write: Callable, *args) -> None:
        if self.pending and not self.flush():
            self.pending.append((write, args))  # keep the order: older events first
            return
        try:
            write(*args)
        except Exception as e:
            if self.down_since is None:
                self.down_since = time.time()
                print(f"[imdb_ray] warning: MLflow {self.uri} stopped answering ({type(e).__name__}); trials go on, "
                      f"their logs are kept and written when it answers again", flush=True)
            self.last_try = self.clock()
            self.pending.append((write, args))

    def flush(self, force: bool = False) -> bool:
        """Write buffered events; True when none is left."""
        if not force and self.clock() - self.last_try < self.retry_s:
            return False
        self.last_try = self.clock()
        while self.pending:
            write, args = self.pending[0]
            try:
                write(*args, replay=True)
            except Exception:
                return False
            self.pending.pop(0)
        if self.down_since is not None:
            print(f"[imdb_ray] MLflow {self.uri} answers again: buffered trial logs written", flush=True)
            self.down_since = None
        return True

    def finish(self, wait_s: float = FINISH_WAIT_S) -> int:
        """At the end of the sweep: try for up to wait_s; returns how many events stay unwritten."""
        deadline = time.monotonic() + wait_s
        while not self.flush(force=True) and time.monotonic() < deadline:
            time.sleep(2)
        return len(self.pending)

    # The writes themselves.
    def _start(self, trial_id: str, name: str, config: dict, replay: bool = False) -> None:
        from imdb_ray.config import TrialConfig

        if trial_id in self.run_ids:
            return
        existing = self.runs.trials(self.parent_id, trial_id)  # a resumed or retried trial continues its own run
        cfg = TrialConfig.from_flat(config, strict=False)
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.last_step[trial_id] = max((m.step for m in self.client.get_metric_history(run_id, "epoch")), default=0)
        else:
            tags = {"mlflow.parentRunId": self.parent_id, "trial_id": trial_id, "trial_name": name, "model": cfg.model,
                    "family": cfg.family.name, "strategy": cfg.strategy, "seed": str(cfg.seed),
                    "peft": str(cfg.model_args.get("peft", "none"))}
            run_id = self.client.create_run(self.runs.experiment_id(), tags=tags, run_name=name).info.run_id
        if not existing or not existing[0].data.params:
            _log_params(self.client, run_id, cfg.flat())
            self.client.log_dict(run_id, redact(cfg.to_dict()), "trial_config.json")
        self.run_ids[trial_id] = run_id

    def _result(self, trial_id: str, result: dict, step: int, replay: bool = False) -> None:
        from mlflow.entities import Metric

        run_id = self.run_ids[trial_id]
        if step <= self.last_step.get(trial_id, 0):
            # A retried trial restored from an older checkpoint than its last report (its node died
            # between the two) trains that epoch again: keep the first record, say it was rerun.
            self.reruns.setdefault(trial_id, []).append(step)
            self.client.set_tag(run_id, "imdb_ray.rerun_epochs", ",".join(map(str, self.reruns[trial_id])))
            return
        metrics = {k: float(v) for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in RAY_BOOKKEEPING}
        # One request per epoch: all of its metrics are written, or none (so "epoch" alone tells a replay).
        key = "epoch" if "epoch" in metrics else next(iter(metrics), None)
        if replay and key and any(m.step == step for m in self.client.get_metric_history(run_id, key)):
            return
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])
        self.last_step[trial_id] = step
        node = result.get("node_id")
        if node and self.nodes.get(trial_id) != node:  # where the trial runs (changes when retried elsewhere)
            self.client.set_tag(run_id, "node_id", node)
            self.nodes[trial_id] = node

    def _end(self, trial_id: str, failed: bool, error: str | None, wall: float | None, cut: str | None,
             replay: bool = False) -> None:
        run_id = self.run_ids[trial_id]
        if wall:
            kind, count = self.devices
            self.client.log_metric(run_id, "wall_seconds", wall)
            self.client.log_metric(run_id, "device_seconds", wall * count)
            self.client.set_tag(run_id, "device_kind", kind)
        if error:
            self.client.log_text(run_id, error, "error.txt")
            self.client.set_tag(run_id, "error", error_summary(error))
        if cut:
            self.client.set_tag(run_id, "imdb_ray.stopped", cut)
        self.client.set_terminated(run_id, "FAILED" if failed else "KILLED" if cut else "FINISHED")
