"""MLflow: one parent run per sweep, one nested child run per trial (Ray's MLflowLoggerCallback,
told to nest, to log the trial's resolved config, and to use the epoch as the step)."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from imdb_ray.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SECRET_WORDS = ("token", "secret", "password", "key", "credential")


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


# Well-known token shapes: Hugging Face, OpenAI-style, AWS access keys, GitHub, Slack.
SECRET_VALUE = re.compile(r"hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abps]-[A-Za-z0-9-]{10,}")


def looks_secret(name: str, value: Any) -> bool:
    """A secret-like name, a token-shaped value, or the value of a secret-named environment variable."""
    if any(w in name.lower() for w in SECRET_WORDS):
        return True
    text = str(value)
    if SECRET_VALUE.search(text):
        return True
    env = (v for k, v in os.environ.items() if any(w in k.lower() for w in SECRET_WORDS) and len(v) >= 8)
    return any(v in text for v in env)


def safe_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop anything that looks like a secret; MLflow params are visible to everyone with the UI."""
    return {k: v for k, v in params.items() if not looks_secret(k, v)}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def find_parent_run(uri: str, experiment: str, experiment_path: str) -> str | None:
    """The newest parent run of the sweep stored at experiment_path (for --resume)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"tags.`imdb_ray.experiment_path` = '{experiment_path}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def start_parent_run(uri: str, experiment: str, sweep_file: Path, settings: dict, experiment_path: str,
                     run_id: str | None = None, command: str = "") -> str:
    """Create (or, on --resume, reopen) the sweep's parent run; returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    exp = client.get_experiment_by_name(experiment)
    # "custom model development": MLflow's UI then opens on the runs table, not its GenAI pages
    exp_id = exp.experiment_id if exp else client.create_experiment(
        experiment, tags={"mlflow.experimentKind": "custom_model_development"})
    run = client.create_run(exp_id, run_name=f"sweep:{experiment}",
                            tags={"imdb_ray.kind": "sweep", "sweep_file": str(sweep_file), "git_commit": git_commit(),
                                  "imdb_ray.experiment_path": experiment_path,
                                  **({"imdb_ray.command": command} if command else {})})
    for k, v in safe_params(settings).items():
        client.log_param(run.info.run_id, k, str(v)[:500])
    client.log_text(run.info.run_id, sweep_file.read_text(), f"sweep/{sweep_file.name}")
    return run.info.run_id


RETRY_S = 10.0  # how often a buffering callback tries the tracking store again
FINISH_WAIT_S = float(os.environ.get("IMDB_RAY_MLFLOW_WAIT_S", 30))  # at the end of a sweep, before giving up


def error_summary(text: str) -> str:
    """The line of a traceback that says what went wrong ("OutOfMemoryError: ...")."""
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0].split(".")[-1]
        if head.endswith(("Error", "Exception", "Interrupt")) or head in ("Killed", "MemoryError"):
            return line[:300]
    return (lines[-1] if lines else "unknown error")[:300]


def trial_callback(uri: str, experiment: str, parent_run_id: str, devices: tuple[str, float] = ("CPU", 1.0)):
    """A Ray Tune MLflowLoggerCallback whose runs are children of the sweep's parent run.

    When the tracking store stops answering mid-sweep, trials go on: every event (run start,
    epoch metrics, end) is kept in order and written when the store answers again; `finish()`
    says what could not be written (Ray keeps every result in the experiment folder anyway).
    At a trial's end it logs wall_seconds and device_seconds (wall time x the devices it held).
    """
    from mlflow.tracking import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from imdb_ray.config import TrialConfig

    class NestedTrialRuns(MLflowLoggerCallback):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.pending: list[tuple[str, tuple]] = []
            self._nodes: dict = {}
            self._last_step: dict = {}  # per trial: the last epoch written, so a rerun epoch is never written twice
            self._reruns: dict = {}
            self.down_since: float | None = None
            self._last_try = 0.0
            self.started: dict = {}  # in start order; Tune's view, whether or not MLflow has been written yet
            self.ended: set = set()
            self.cut_short: list[str] = []  # trials still running when the sweep ended (its time budget)

        # Tune's hooks: never let a tracking failure reach Tune (it would end the sweep).
        def log_trial_start(self, trial):
            self.started[trial] = True
            self._guard("_start", trial)

        def log_trial_result(self, iteration, trial, result):
            self._guard("_result", trial, dict(result), iteration)

        def log_trial_end(self, trial, failed: bool = False):
            error = None
            if failed and trial.error_file and os.path.exists(trial.error_file):
                error = re.sub(r"\x1b\[[0-9;]*m", "", Path(trial.error_file).read_text(errors="replace"))  # no colours
            wall = (trial.last_result or {}).get("time_total_s")
            self.ended.add(trial)  # now, not when written: the write may wait in the buffer
            self._guard("_end", trial, failed, error, wall)

        def on_experiment_end(self, trials, **info):
            # Tune ends the trials it stops at the sweep's time budget without a trial-end event:
            # close their runs here (KILLED, with what they reached), or they would stay RUNNING.
            for trial in [t for t in self.started if t not in self.ended]:
                self.ended.add(trial)
                epoch = (trial.last_result or {}).get("epoch", 0)
                self.cut_short.append(trial.trial_id)
                self._guard("_end", trial, False, None, (trial.last_result or {}).get("time_total_s"),
                            f"sweep ended (time budget or interrupt) after epoch {epoch}")

        def _guard(self, event: str, *args) -> None:
            if self.pending and not self.flush():
                self.pending.append((event, args))  # keep the order: older events first
                return
            try:
                getattr(self, event)(*args)
            except Exception as e:
                if self.down_since is None:
                    self.down_since = time.time()
                    print(f"[imdb_ray] warning: MLflow {uri} stopped answering ({type(e).__name__}); trials go on, "
                          f"their logs are kept and written when it answers again", flush=True)
                self._last_try = time.monotonic()
                self.pending.append((event, args))

        def flush(self, force: bool = False) -> bool:
            """Write buffered events; True when none is left."""
            if not force and time.monotonic() - self._last_try < RETRY_S:
                return False
            self._last_try = time.monotonic()
            while self.pending:
                event, args = self.pending[0]
                try:
                    getattr(self, event)(*args, replay=True)
                except Exception:
                    return False
                self.pending.pop(0)
            if self.down_since is not None:
                print(f"[imdb_ray] MLflow {uri} answers again: buffered trial logs written", flush=True)
                self.down_since = None
            return True

        def finish(self, wait_s: float = FINISH_WAIT_S) -> int:
            """At the end of the sweep: try for up to wait_s; returns how many events stay unwritten."""
            deadline = time.monotonic() + wait_s
            while not self.flush(force=True) and time.monotonic() < deadline:
                time.sleep(2)
            return len(self.pending)

        # The MLflow writes themselves.
        def _start(self, trial, replay: bool = False) -> None:
            if trial in self._trial_runs:
                return
            client = MlflowClient(uri)
            # A resumed or retried trial continues its own child run (no duplicate runs).
            existing = client.search_runs(
                [client.get_experiment_by_name(experiment).experiment_id],
                f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.trial_id = '{trial.trial_id}'")
            cfg = TrialConfig.from_flat(trial.config, strict=False)
            if existing:
                run_id = existing[0].info.run_id
                client.update_run(run_id, status="RUNNING")
                self._last_step[trial] = max((m.step for m in client.get_metric_history(run_id, "epoch")), default=0)
            else:
                tags = {"mlflow.parentRunId": parent_run_id, "trial_id": trial.trial_id, "trial_name": str(trial),
                        "model": cfg.model, "family": cfg.family, "strategy": cfg.strategy, "seed": str(cfg.seed),
                        "peft": str(cfg.model_args.get("peft", "none"))}
                run_id = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
            if not existing or not existing[0].data.params:
                self.mlflow_util.log_params(run_id=run_id, params_to_log=safe_params(cfg.flat()))
                client.log_dict(run_id, cfg.to_dict(), "trial_config.json")
            self._trial_runs[trial] = run_id

        def _result(self, trial, result: dict, iteration: int, replay: bool = False) -> None:
            metrics = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            run_id, step = self._trial_runs[trial], int(result.get("epoch", iteration))
            if step <= self._last_step.get(trial, 0):
                # A retried trial restored from an older checkpoint than its last report (its node died
                # between the two) trains that epoch again: keep the first record, say it was rerun.
                self._reruns.setdefault(trial, []).append(step)
                MlflowClient(uri).set_tag(run_id, "imdb_ray.rerun_epochs", ",".join(map(str, self._reruns[trial])))
                return
            if replay and metrics:  # the store may have applied it before the connection broke: at most once
                key = "epoch" if "epoch" in metrics else next(iter(metrics))
                if any(m.step == step for m in MlflowClient(uri).get_metric_history(run_id, key)):
                    return
            self.mlflow_util.log_metrics(run_id=run_id, metrics_to_log=metrics, step=step)
            self._last_step[trial] = step
            node = result.get("node_id")
            if node and self._nodes.get(trial) != node:  # where the trial runs (changes when retried elsewhere)
                MlflowClient(uri).set_tag(run_id, "node_id", node)
                self._nodes[trial] = node

        def _end(self, trial, failed: bool, error: str | None, wall: float | None, cut: str | None = None,
                 replay: bool = False) -> None:
            run_id = self._trial_runs[trial]
            if wall:
                kind, count = devices
                client = MlflowClient(uri)
                client.log_metric(run_id, "wall_seconds", wall)
                client.log_metric(run_id, "device_seconds", wall * count)
                client.set_tag(run_id, "device_kind", kind)
            if error:
                client = MlflowClient(uri)
                client.log_text(run_id, error, "error.txt")
                client.set_tag(run_id, "error", error_summary(error))
            if cut:
                MlflowClient(uri).set_tag(run_id, "imdb_ray.stopped", cut)
            self.mlflow_util.end_run(run_id=run_id, status="FAILED" if failed else "KILLED" if cut else "FINISHED")

    return NestedTrialRuns(tracking_uri=uri, experiment_name=experiment)


def close_orphaned_runs(uri: str, experiment: str, parent_run_id: str, trial_ids: set) -> int:
    """A driver killed between Tune's experiment snapshots loses trials that had already started;
    `--resume` samples replacements. Their child runs keep what they logged, marked KILLED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    orphans = [r for r in client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
               if r.data.tags.get("trial_id") not in trial_ids]
    for run in orphans:
        client.set_tag(run.info.run_id, "imdb_ray.orphaned",
                       "driver killed before Ray Tune snapshotted this trial; --resume ran a replacement")
        client.set_terminated(run.info.run_id, "KILLED")
    return len(orphans)
