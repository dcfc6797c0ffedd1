"""Ray Tune callbacks: MLflow child runs per trial, the console lines a user reads, and the end of a stopped
trial's Train run, which Ray leaves going. They only translate Tune's events; the MLflow
writing is `tracking.TrialLog`."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ray.tune import Callback
from ray.tune.logger import LoggerCallback

from imdb_ray.sweep.packing import SHARE_KEY, grown_share, ran_out_of_gpu_memory
from imdb_ray.tracking import TrialLog

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


class MLflowTrialRuns(LoggerCallback):
    """One nested MLflow run per trial (what Ray's MLflowLoggerCallback does, with parent runs, the
    epoch as the step, one write per epoch, and a buffer for when the store does not answer)."""

    def __init__(self, log: TrialLog, searched: dict[str, list[str]] | None = None):
        self.log, self.searched = log, searched or {}
        self.started: list = []  # Tune's view, whether or not MLflow has been written yet
        self.ended: set = set()
        self.cut_short: list[str] = []  # trials still running when the sweep ended (its time budget)

    def log_trial_start(self, trial):
        if trial not in self.started:
            self.started.append(trial)
        self.log.start(trial.trial_id, run_name(trial.config, self.searched), trial.config)

    def log_trial_result(self, iteration, trial, result):
        self.log.result(trial.trial_id, result, int(result.get("epoch", iteration)))

    def log_trial_end(self, trial, failed: bool = False):
        self.ended.add(trial)  # now, not when written: the write may wait in the buffer
        self.log.end(trial.trial_id, failed=failed, error=_error_text(trial) if failed else None,
                     wall=(trial.last_result or {}).get("time_total_s"))

    def on_experiment_end(self, trials, **info):
        # Tune ends the trials it stops at the sweep's time budget without a trial-end event:
        # close their runs here (KILLED, with what they reached), or they would stay RUNNING.
        for trial in [t for t in self.started if t not in self.ended]:
            self.ended.add(trial)
            self.cut_short.append(trial.trial_id)
            last = trial.last_result or {}
            self.log.end(trial.trial_id, wall=last.get("time_total_s"),
                         cut=f"sweep ended (time budget or interrupt) after epoch {last.get('epoch', 0)}")


def _error_text(trial) -> str | None:
    if not trial.error_file or not os.path.exists(trial.error_file):
        return None
    return re.sub(r"\x1b\[[0-9;]*m", "", Path(trial.error_file).read_text(errors="replace"))  # no colour codes


class EndStoppedTrainRuns(Callback):
    """Ray Train trials under Tune (Ray 2.60, Train V2): when Tune stops a trial whose Train run is still going
    (ASHA's early stop, a retry, the sweep's end), it keeps the trial's process for the next trial (reuse_actors)
    without telling it. The run's controller, in that process (ray_compat.run_controller_in_process), waits in the
    report Tune stopped the trial on, while its workers would go on training, their placement group's CPUs/GPUs
    taken, until the next trial starts in the process and the controller ends them. Each Train worker reports its
    group; it is removed here at once (a no-op if the run has ended it), and its workers with it.
    Check whether this is still needed when upgrading Ray."""

    def __init__(self):
        self.groups: dict[str, set[str]] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("train_placement_group"):
            self.groups.setdefault(trial.trial_id, set()).add(result["train_placement_group"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        release_placement_groups(self.groups.pop(trial.trial_id, set()))

    on_trial_error = on_trial_recover = on_trial_complete

    def on_experiment_end(self, trials, **info):
        """Trials still running when the sweep ends (time budget, Ctrl-C) are stopped without an
        on_trial_complete: their groups too, or the confirmation stage that follows on the same Ray
        waits for workers forever (seen: a classic run's budget-cut lstm trial)."""
        for trial_id in list(self.groups):
            release_placement_groups(self.groups.pop(trial_id))


def release_placement_groups(hex_ids: Iterable[str]) -> int:
    """Remove the placement groups that still exist among these; returns how many were removed."""
    from ray.util.placement_group import placement_group_table, remove_placement_group

    from imdb_ray.sweep.ray_compat import placement_group

    removed = 0
    for hex_id in hex_ids:
        group = placement_group(hex_id)
        try:
            if placement_group_table(group).get("state") not in (None, "REMOVED"):
                remove_placement_group(group)
                removed += 1
        except Exception:  # gone already, or the cluster is shutting down: nothing left to free
            pass
    return removed


class GrowGpuShareOnOOM(Callback):
    """A packed trial that runs out of GPU memory fails alone (each trial is its own process) and Tune retries
    it from its last checkpoint (the sweep's max_failures); this gives the retry twice the GPU share, so Ray
    packs fewer trials beside it. A direct trial's share is its Tune resources; a ray_train trial's is what
    its function gives the Train workers, read from the config (SHARE_KEY)."""

    def __init__(self, gpus_per_worker: float, cpus_per_worker: float, direct: bool):
        self.share, self.cpus, self.direct = gpus_per_worker, cpus_per_worker, direct
        self.grown: dict[str, float] = {}  # trial id -> the share its retry got

    def on_trial_recover(self, iteration, trials, trial, **info):
        share = trial.config.get(SHARE_KEY, self.share)
        grown = grown_share(share) if ran_out_of_gpu_memory(_error_text(trial)) else None
        if grown is None:
            return
        trial.config[SHARE_KEY] = self.grown[trial.trial_id] = grown
        if self.direct:  # Tune requests the new share when it starts the trial again (update_resources: not while running)
            trial.update_resources({"CPU": self.cpus, "GPU": grown})
        trial.invalidate_json_state()  # the experiment state (--resume) keeps the new config
        print(f"[imdb_ray] {trial.trial_id} ran out of GPU memory at gpus_per_worker={share:g}; retrying it from its "
              f"last checkpoint with {grown:g}", flush=True)


class ConsoleProgress(Callback):
    """What a user watches: one line per finished trial (its model, the parameters its branch
    samples, its best metric and epochs) and a sweep line (done / running with each one's last epoch /
    left, ETA), also every `every_s` seconds while trials run. Ray's own tables stay off unless `-v`.

    Tune pickles its callbacks with the experiment when the sweep starts and a resumed sweep gets them
    back from there, so the clock, the finished set and the ETA's baseline are reset in `setup`, which
    Tune calls at the start of every run, first or resumed."""

    def __init__(self, metric: str, mode: str, total: int, searched: dict[str, list[str]], epochs: dict[str, int],
                 every_s: float = 60.0, clock=time.monotonic):
        self.metric, self.mode, self.total, self.searched, self.epochs = metric, mode, total, searched, epochs
        self.every_s, self.clock = every_s, clock
        self.setup()

    @classmethod
    def for_sweep(cls, sweep, total: int | None = None) -> "ConsoleProgress":
        return cls(sweep.selection.best_key, sweep.mode, total or sweep.trial_count(), sweep.searched_keys(), sweep.epochs_by_model())

    def setup(self, **info) -> None:
        self.start = self.last_line = self.clock()
        self.finished: set[str] = set()  # trials whose line this run printed
        self.done_before: int | None = None  # trials already done when this run began (a resumed sweep)
        self.last_state = ""  # the last sweep line, less its clock

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finished(trials, trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finished(trials, trial, failed=True)

    def on_step_end(self, iteration, trials, **info):
        if self.done_before is None:
            self.done_before = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        quiet = self.clock() - self.last_line
        # every minute while something moves (an epoch, a trial), every ten while a long epoch runs
        if quiet >= self.every_s and (quiet >= 10 * self.every_s or self._state(trials)[2] != self.last_state):
            self._progress(trials)

    def _finished(self, trials, trial, failed: bool) -> None:
        if trial.trial_id in self.finished:
            return
        self.finished.add(trial.trial_id)
        print(f"[imdb_ray] {trial_line(trial, self.searched, self.metric, self.epochs, failed)}", flush=True)
        self._progress(trials)

    def _state(self, trials) -> tuple[list, int, str]:
        """(running trials, trials done, what the line says about them)."""
        # a trial whose end is being reported is still RUNNING in Tune's list at that moment
        running = [t for t in trials if t.status == "RUNNING" and t.trial_id not in self.finished]
        done = sum(t.status in ("TERMINATED", "ERROR") or t.trial_id in self.finished for t in trials)
        where = ", ".join(self._epoch_of(t) for t in running[:4]) + (", ..." if len(running) > 4 else "")
        return running, done, f"{done} done, {len(running)} running{f' ({where})' if where else ''}"

    def _progress(self, trials) -> None:
        self.last_line = now = self.clock()
        running, done, self.last_state = self._state(trials)
        left = max(0, self.total - done - len(running))
        done_here = done - (self.done_before or 0)
        eta = ""
        if done_here > 0 and (left or running):  # trials finished per second in this run, applied to what is left
            eta = f", ETA {_duration((left + len(running) / 2) * (now - self.start) / done_here)}"
        print(f"[imdb_ray] sweep: {self.last_state}, {left} left; {_duration(now - self.start)} elapsed{eta}", flush=True)

    def _epoch_of(self, trial) -> str:
        last = trial.last_result or {}
        value = f" {self.metric.removeprefix('best_')} {last[self.metric]:.4f}" if self.metric in last else ""
        model = trial.config.get("model")
        return f"{model} epoch {last.get('epoch', 0)}/{self.epochs.get(model, '?')}{value}"


def trial_line(trial: Trial, searched: dict[str, list[str]], metric: str, epochs: dict[str, int], failed: bool = False) -> str:
    """`gru lr=0.0012 hidden=128: best val_accuracy 0.8712, 4/6 epochs (stopped early), 53s`."""
    config, last = trial.config, trial.last_result or {}
    params = " ".join(f"{k}={_short(config[k])}" for k in searched.get(config.get("model"), []) if k in config)
    head = f"trial {trial.trial_id} {config.get('model')}" + (f" {params}" if params else "")
    if failed:
        error = _error_text(trial) or "no error file"
        return f"{head}: FAILED ({error.strip().splitlines()[-1][:160] if error.strip() else 'see the trial log'})"
    ran, most = last.get("epoch", 0), epochs.get(config.get("model"), "?")
    stopped = " (stopped early)" if last.get("finished") is False else ""
    best = f"best {metric.removeprefix('best_')} {last[metric]:.4f}" if metric in last else "no result"
    return f"{head}: {best}, {ran}/{most} epochs{stopped}, {last.get('time_total_s', 0):.0f}s"


def run_name(config: dict, searched: dict[str, list[str]]) -> str:
    """An MLflow child run's name: its model and sampled values, as the console shows them (`gru lr=0.0012
    hidden=128`); a confirmation rerun says so (`confirm seed 2: gru lr=0.0012 hidden=128`)."""
    model = config.get("model", "?")
    params = " ".join(f"{k}={_short(config[k])}" for k in searched.get(model, []) if k in config)
    name = f"{model} {params}".strip()
    return f"confirm seed {config.get('seed')}: {name}" if config.get("confirms") else name


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
