"""Ray Tune callbacks: MLflow child runs per trial, and a fix for Train placement groups that Ray
leaves reserved. Both only translate Tune's events; the MLflow writing is `tracking.TrialLog`."""
from __future__ import annotations

import os
import re
from pathlib import Path

import ray
from ray.tune import Callback
from ray.tune.logger import LoggerCallback

from imdb_ray.tracking import TrialLog


class MLflowTrialRuns(LoggerCallback):
    """One nested MLflow run per trial (what Ray's MLflowLoggerCallback does, with parent runs, the
    epoch as the step, one write per epoch, and a buffer for when the store does not answer)."""

    def __init__(self, log: TrialLog):
        self.log = log
        self.started: list = []  # Tune's view, whether or not MLflow has been written yet
        self.ended: set = set()
        self.cut_short: list[str] = []  # trials still running when the sweep ended (its time budget)

    def log_trial_start(self, trial):
        if trial not in self.started:
            self.started.append(trial)
        self.log.start(trial.trial_id, str(trial), trial.config)

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


class ReleaseTrainPlacementGroups(Callback):
    """Workaround for Ray 2.60 (Train V2): when Tune stops a trial whose Ray Train run is still going
    (ASHA's early stop, a retry), Ray leaves that run's worker placement group reserved: its
    CPUs/GPUs stay taken for the rest of the sweep and later trials wait for workers forever. Each
    Train worker reports its group; when the trial ends or restarts, the group is removed (a no-op
    if Train already did). Check whether it is still needed when upgrading Ray."""

    RAY_VERSION = "2.60"

    def __init__(self):
        self.groups: dict[str, set[str]] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("train_placement_group"):
            self.groups.setdefault(trial.trial_id, set()).add(result["train_placement_group"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        release_placement_groups(self.groups.pop(trial.trial_id, set()))

    on_trial_error = on_trial_recover = on_trial_complete


def release_placement_groups(hex_ids) -> int:
    """Remove the placement groups that still exist among these; returns how many were removed."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    removed = 0
    for hex_id in hex_ids:
        group = PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))
        try:
            if placement_group_table(group).get("state") not in (None, "REMOVED"):
                remove_placement_group(group)
                removed += 1
        except Exception:  # gone already, or the cluster is shutting down: nothing left to free
            pass
    return removed


def current_placement_group() -> str:
    """Called in a Train worker: its worker group's placement group, for ReleaseTrainPlacementGroups."""
    group = ray.util.get_current_placement_group()
    return group.id.hex() if group else ""
