"""Runs: a sweep's (`SweepRuns`: its parent run and its trials' child runs, read and written) and a
`train` command's (`TrainRun`)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from imdb_ray.environment import run_tags
from imdb_ray.redact import redact_text
from imdb_ray.tracking.store import _client, _log_params, experiment_id, git_commit, log_metrics, log_model, register_champion


@dataclass
class Tested:
    """One trial evaluated on test after the sweep: its metrics and the files written for it."""

    __test__ = False  # not a pytest class, whatever its name

    trial_id: str
    metrics: dict[str, float]
    files: dict[str, str]  # "test_predictions", "val_predictions" (CSV: row, label, prob_positive), "model" (bundle)
    is_best: bool
    model: str = ""
    val: float | None = None  # its best validation value, the one it was selected on
    registered: str = ""  # the best trial: its Model Registry URI (models:/imdb_ray-<sweep>@champion), once logged
    confirms: str = ""  # a confirmation rerun: the trial id of the config it trains again

    # the names compare.confirmed_configs reads, shared with report's rows
    @property
    def selection(self) -> float | None:
        return self.val

    @property
    def test_accuracy(self) -> float | None:
        return self.metrics.get("test_accuracy")


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
        exp_id = self._experiment_id = self.experiment_id() or experiment_id(self.client, self.experiment)
        run = self.client.create_run(exp_id, run_name=f"sweep:{self.experiment}",
                                     tags={"imdb_ray.kind": "sweep", "sweep_file": str(sweep_file),
                                           "git_commit": git_commit(), "imdb_ray.experiment_path": experiment_path, **run_tags(),
                                           **({"imdb_ray.command": command} if command else {})})
        _log_params(self.client, run.info.run_id, settings)
        self.client.log_text(run.info.run_id, redact_text(sweep_file.read_text()), f"sweep/{sweep_file.name}")
        return run.info.run_id

    def reopen_parent(self, run_id: str) -> str:
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def finish_parent(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

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
                for split in ("test", "val"):
                    if f"{split}_predictions" in t.files:
                        self.client.log_artifact(run_id, t.files[f"{split}_predictions"])
                model_uri = log_model(self.uri, run_id, t.files["model"]) if "model" in t.files else None
                if t.is_best:
                    self.client.set_tag(run_id, "best_trial", "true")
                    if model_uri:
                        t.registered = register_champion(self.uri, self.experiment, model_uri)
                        self.client.set_tag(parent_id, "imdb_ray.champion", t.registered)

    def stop_running(self, parent_id: str, why: str) -> int:
        """The sweep's child runs still RUNNING, marked KILLED with `why` (as a time budget's cut marks them): what
        Tune's stop would have closed, when it could not run. A resumed trial reopens its run."""
        return self._kill([r for r in self.trials(parent_id) if r.info.status == "RUNNING"], "imdb_ray.stopped", why)

    def close_orphans(self, parent_id: str, trial_ids: set) -> int:
        """A driver killed between Tune's experiment snapshots loses trials that had already started;
        `--resume` samples replacements. Their child runs keep what they logged, marked KILLED."""
        return self._kill([r for r in self.trials(parent_id) if r.data.tags.get("trial_id") not in trial_ids],
                          "imdb_ray.orphaned", "driver killed before Ray Tune snapshotted this trial; --resume ran a replacement")

    def _kill(self, runs: list, tag: str, why: str) -> int:
        """Each run marked KILLED, with `tag` saying why; how many."""
        for run in runs:
            self.client.set_tag(run.info.run_id, tag, why)
            self.client.set_terminated(run.info.run_id, "KILLED")
        return len(runs)

    def best_trial_run_id(self) -> str | None:
        """The best trial of this sweep's newest run that has one (what `predict sweep:NAME` loads)."""
        exp_id = self.experiment_id()
        runs = self.client.search_runs([exp_id], "tags.best_trial = 'true'", order_by=["attributes.start_time DESC"],
                                       max_results=1) if exp_id else []
        return runs[0].info.run_id if runs else None


class TrainRun:
    """A `train` command's MLflow run: params, one batch of metrics per epoch (the epoch is the step), test
    metrics, and its model (`log_model`). `--resume` continues the same run (its id is kept in the run
    folder). A store that stops answering costs one warning, never the training: the run folder has it all."""

    def __init__(self, uri: str, experiment: str, cfg, run_dir: Path, command: str = ""):
        self.uri, self.client, self.run_id = uri, _client(uri), None
        self._guard(self._open, experiment, cfg, run_dir, command)

    def _open(self, experiment: str, cfg, run_dir: Path, command: str) -> None:
        id_file = run_dir / "mlflow_run_id"
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"imdb_ray.kind": "train", "imdb_ray.run_dir": str(run_dir), "model": cfg.model, "family": cfg.family.name,
                "git_commit": git_commit(), **run_tags(), **({"imdb_ray.command": command} if command else {})}
        self.run_id = self.client.create_run(experiment_id(self.client, experiment), run_name=run_dir.name, tags=tags).info.run_id
        _log_params(self.client, self.run_id, cfg.flat())
        id_file.write_text(self.run_id)

    def epoch(self, metrics: dict[str, Any]) -> None:
        self._guard(log_metrics, self.client, self.run_id, metrics, int(metrics.get("epoch", 0)))

    def finish(self, test_metrics: dict[str, float], bundle: Path) -> str | None:
        """Test metrics, the model, FINISHED; returns the model's runs:/ URI (None if the store is gone)."""
        def write() -> str:
            for k, v in test_metrics.items():
                self.client.log_metric(self.run_id, k, v)
            outputs = self.client.get_run(self.run_id).outputs
            for earlier in (outputs.model_outputs if outputs else []):  # --resume trained on: one `model` per run
                self.client.delete_logged_model(earlier.model_id)
            log_model(self.uri, self.run_id, bundle)
            self.client.set_terminated(self.run_id, "FINISHED")
            return f"runs:/{self.run_id}/model"
        return self._guard(write)

    def end(self, status: str) -> None:
        """Stopped before finishing: KILLED (Ctrl-C, SIGTERM) or FAILED (a crash), as MLflow's own start_run() ends a run."""
        self._guard(lambda: self.client.set_terminated(self.run_id, status) if self.run_id else None)

    def discard(self) -> None:
        """The model refused before its first epoch: no run is left behind (nor a run folder)."""
        def failed_and_deleted() -> None:  # ended first: a deleted run must not stay RUNNING in the store
            self.client.set_terminated(self.run_id, "FAILED")
            self.client.delete_run(self.run_id)

        self._guard(lambda: failed_and_deleted() if self.run_id else None)

    def _guard(self, write: Callable, *args):
        if self.client is None:  # not written since the store stopped answering
            return None
        try:
            return write(*args)
        except Exception as e:
            print(f"warning: MLflow {self.uri}: {type(e).__name__} ({str(e).splitlines()[0][:200] if str(e) else ''}); "
                  "the run goes on without it (everything is in the run folder)", file=sys.stderr)
            self.client = None
            return None
