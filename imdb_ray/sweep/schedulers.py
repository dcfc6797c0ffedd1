"""ASHA with its rungs kept per group of trials.

Plain ASHA ranks every trial at a rung against every other. Two cases where that is unfair:
- a sweep over several families: a GRU's first epoch (slow to start) meets a CNN's (fast), so the slow learners
  are stopped for being slow, not for being worse (`rungs_per_model`: each model gets its own rungs);
- a model that trains in one pass (tfidf_lr, nbsvm: no epochs to stop between) reports one score, often the
  sweep's best (0.90 for NB-SVM), at rung 1: every neural trial's first epoch is then ranked below it and
  stopped. Those trials run outside the rungs; there is nothing to stop in them anyway.
Tune's public TrialScheduler API only: each group is an ASHAScheduler built from the same arguments.
"""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler


class GroupedASHA(FIFOScheduler):
    """One ASHAScheduler per model (`per_model`) or one for all; `one_pass` models' trials under FIFO."""

    def __init__(self, per_model: bool = False, one_pass: frozenset[str] = frozenset(), **asha_args) -> None:
        super().__init__()
        self.per_model, self.one_pass, self.asha_args = per_model, frozenset(one_pass), asha_args
        self.groups: dict[str, ASHAScheduler] = {}
        self.outside = FIFOScheduler()
        self.search_metric: str | None = None
        self.search_mode: str | None = None

    @property
    def metric(self) -> str | None:
        return self.search_metric

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        self.search_metric, self.search_mode = metric, mode
        return True

    def _scheduler(self, trial) -> TrialScheduler:
        model = str(trial.config.get("model", ""))
        if model in self.one_pass:
            return self.outside
        group = model if self.per_model else ""
        if group not in self.groups:
            self.groups[group] = ASHAScheduler(metric=self.search_metric, mode=self.search_mode, **self.asha_args)
        return self.groups[group]

    def on_trial_add(self, tune_controller, trial) -> None:
        self._scheduler(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._scheduler(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._scheduler(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._scheduler(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{group or 'all'}: {asha.debug_string()}" for group, asha in self.groups.items())
