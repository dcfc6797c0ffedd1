"""A trial's child run, written event by event (start, one batch of metrics per epoch, end), kept in
order while the store does not answer. No Ray here: sweep/callbacks.py translates Tune's events."""
from __future__ import annotations

import os
import time
from typing import Callable

from imdb_ray.redact import redact
from imdb_ray.tracking.runs import SweepRuns
from imdb_ray.tracking.store import _log_params, error_summary, log_metrics

RETRY_S = float(os.environ.get("IMDB_RAY_MLFLOW_RETRY_S", 10))  # how often a buffering TrialLog tries the store again
FINISH_WAIT_S = float(os.environ.get("IMDB_RAY_MLFLOW_WAIT_S", 30))  # at the end of a sweep, before giving up
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
                 workers: int = 1, client=None, retry_s: float = RETRY_S, clock: Callable[[], float] = time.monotonic):
        self.uri, self.parent_id, self.devices, self.workers = uri, parent_id, devices, workers
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
        if existing:  # "attempt": how often the trial started (Ray retried it, or the sweep was resumed)
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "attempt", str(int(existing[0].data.tags.get("attempt", "1")) + 1))
            if "imdb_ray.stopped" in existing[0].data.tags:  # cut by a Ctrl-C or a budget, and now going on
                self.client.delete_tag(run_id, "imdb_ray.stopped")
            self.last_step[trial_id] = max((m.step for m in self.client.get_metric_history(run_id, "epoch")), default=0)
        else:
            tags = {"mlflow.parentRunId": self.parent_id, "trial_id": trial_id, "trial_name": name, "model": cfg.model,
                    "family": cfg.family.name, "strategy": cfg.strategy, "seed": str(cfg.seed),
                    "peft": str(cfg.model_args.get("peft", "none")), "attempt": "1"}
            if config.get("confirms"):  # the confirmation stage: this config's search trial, trained with a new seed
                tags |= {"imdb_ray.stage": "confirm", "imdb_ray.confirms": str(config["confirms"])}
            run_id = self.client.create_run(self.runs.experiment_id(), tags=tags, run_name=name).info.run_id
        if not existing or not existing[0].data.params:
            params = cfg.flat()
            if "batch_size" in params:  # per Train worker: each optimiser step averages all workers' batches
                params |= {"workers_per_trial": self.workers, "global_batch_size": cfg.batch_size * self.workers}
            _log_params(self.client, run_id, params)
            self.client.log_dict(run_id, redact(cfg.to_dict()), "trial_config.json")
        self.run_ids[trial_id] = run_id

    def _result(self, trial_id: str, result: dict, step: int, replay: bool = False) -> None:
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
        log_metrics(self.client, run_id, metrics, step)
        self.last_step[trial_id] = step
        node = result.get("node_id")
        if node and self.nodes.get(trial_id) != node:  # where the trial runs (changes when retried elsewhere)
            self.client.set_tag(run_id, "node_id", node)
            for key in ("imdb_ray.machine", "imdb_ray.versions"):  # that node's CPU model and GPUs, its libraries
                if result.get(key):  # (sweep/trial.placement: environment.run_tags)
                    self.client.set_tag(run_id, key, str(result[key]))
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
