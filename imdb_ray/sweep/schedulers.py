"""ASHA with one set of rungs per model branch.

Plain ASHA ranks every trial at a rung against every other: a GRU's first epoch (slow to start) against a CNN's
(fast), so a sweep over several families stops the slow learners for being slow, not for being worse. Here each
model gets its own ASHAScheduler, built from the same arguments; Tune's public TrialScheduler API only.
"""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


class PerModelASHA(FIFOScheduler):
    """One ASHAScheduler per value of the trial's `model`, created when that model's first trial arrives."""

    def __init__(self, **asha_args) -> None:
        super().__init__()
        self.asha_args = asha_args
        self.by_model: dict[str, ASHAScheduler] = {}
        self.search_metric: str | None = None
        self.search_mode: str | None = None

    @property
    def metric(self) -> str | None:
        return self.search_metric

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        self.search_metric, self.search_mode = metric, mode
        return True

    def _asha(self, trial) -> ASHAScheduler:
        model = str(trial.config.get("model", ""))
        if model not in self.by_model:
            self.by_model[model] = ASHAScheduler(metric=self.search_metric, mode=self.search_mode, **self.asha_args)
        return self.by_model[model]

    def on_trial_add(self, tune_controller, trial) -> None:
        self._asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        return self._asha(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._asha(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{model}: {asha.debug_string()}" for model, asha in self.by_model.items())
