"""The searchers a sweep runs: a Tune `Searcher` that owns an Optuna study over the branches (TPE, or
Optuna's random sampler for search="random"), and a grid. Both give every trial a config no other trial of
the sweep has had, so a model with nothing to sample (tfidf_lr) runs once however often it is drawn.

`SweepSearch` speaks to Optuna only through its public API (`ask`, `tell`, `enqueue_trial`, `Trial.report`):
- each model gets a trial before any model gets a second (the first round is enqueued, the
  scikit-learn baselines first: they take a minute, and a time budget that runs out before the
  first round ends should not leave the leaderboard without its reference rows), so no branch of
  the space is left out;
- a drawn config that already ran (or is running) is told to Optuna with the value it got, and the
  least-tried model that can still give a new config is drawn instead;
- every epoch is reported to the study as an intermediate value, the last one too;
- a trial the scheduler stopped early is told as PRUNED (TPE then ranks it by the epoch it reached)
  rather than COMPLETE;
- the study lives in a sqlite file beside the sweep, so `--resume` keeps its history and
  `optuna-dashboard sqlite:///...` shows it.
"""
from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from ray.tune.search import Searcher

from imdb_ray.models.registry import get_model
from imdb_ray.sweep.space import DefineByRun, config_key

if TYPE_CHECKING:
    import optuna

MAX_DRAWS = 64  # asks per suggestion before the searcher gives up on finding a new config


def first_round(models: list[str]) -> list[str]:
    """The models in the order their first trials are enqueued: baselines (no torch training) first."""
    return sorted(models, key=lambda m: get_model(m).family != "baseline")  # a stable sort keeps the sweep file's order


class SweepSearch(Searcher):
    def __init__(self, space: DefineByRun, *, metric: str, mode: str, sampler, storage=None, study_name: str | None = None):
        import optuna

        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler, load_if_exists=True,
                                         direction="maximize" if mode == "max" else "minimize")
        if not self.study.get_trials(deepcopy=False):  # a study resumed from its file keeps its own queue
            for model in first_round(space.models):
                self.study.enqueue_trial({"model": model})
        self.trials: dict = {}  # Tune trial id -> its Optuna trial, until told
        self.told: set[str] = set()
        self.numbers: dict[str, int] = {}  # Tune trial id -> its Optuna trial number (the dashboard's)
        self.trial_keys: dict[str, str] = {}  # trial id -> its config's key
        self.key_values: dict[str, float] = {}  # config key -> the value its trial ended with
        self.per_model: Counter = Counter()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Optuna's intermediate values at the loop's epoch (Tune's training_iteration restarts at 1 when a
        ray_train trial is resumed after its driver died, and Optuna ignores a step reported twice)."""
        if trial_id in self.trials and trial_id not in self.told and self.metric in result:
            self.trials[trial_id].report(result[self.metric], result.get("epoch", result.get("training_iteration", 1)))

    def suggest(self, trial_id: str) -> dict | None:
        import optuna

        taken = set(self.trial_keys.values())
        for _ in range(MAX_DRAWS):
            ot_trial = self.study.ask()
            config = self.space(ot_trial)
            key = config_key(config)
            if key not in taken:
                self.trials[trial_id], self.numbers[trial_id] = ot_trial, ot_trial.number
                self.trial_keys[trial_id] = key
                self.per_model[config["model"]] += 1
                return config
            value = self.key_values.get(key)  # Optuna learns what it already knows; no trial is run for it
            if value is None:
                self.study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
            else:
                self.study.tell(ot_trial, value)
            fresh = self._unexplored(taken)
            if fresh is None:
                return Searcher.FINISHED
            self.study.enqueue_trial(fresh)
        return Searcher.FINISHED

    def _unexplored(self, taken: set[str]) -> dict | None:
        """Optuna params for the least-tried model that can still give a new config (a specific unseen
        config for a model with only choices); None when every model is exhausted."""
        for model in sorted(self.space.models, key=lambda m: self.per_model[m]):
            configs = self.space.finite_configs(model)
            if configs is None:
                return {"model": model}
            unseen = [c for c in configs if config_key(c) not in taken]
            if unseen:
                return self.space.optuna_params(unseen[0])
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """The trial's last epoch reported (Tune passes it here, not to on_trial_result), then its end told:
        COMPLETE with its best value, PRUNED when the scheduler stopped it before its last epoch, FAIL on an error."""
        import optuna

        value = (result or {}).get(self.metric)
        if value is not None:
            self.key_values[self.trial_keys.get(trial_id, "")] = value
        if trial_id in self.told or trial_id not in self.trials:
            return
        self.told.add(trial_id)
        ot_trial = self.trials.pop(trial_id)
        if error or value is None:
            state, value = optuna.trial.TrialState.FAIL, None
        else:
            step = result.get("epoch", result.get("training_iteration", 1))
            if step not in self.study.get_trials(deepcopy=False)[ot_trial.number].intermediate_values:  # not seen yet
                ot_trial.report(value, step)
            stopped_early = result.get("finished") is False  # by the scheduler: TPE ranks it by the epoch it reached
            state = optuna.trial.TrialState.PRUNED if stopped_early else optuna.trial.TrialState.COMPLETE
        try:
            self.study.tell(ot_trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        except (RuntimeError, ValueError):  # a resumed trial Optuna was told of already: nothing to add
            pass

    def save(self, checkpoint_path: str) -> None:
        """Tune's searcher checkpoint (a resumed sweep's searcher comes back from it); the study itself is
        pickled with its storage: a sqlite study reconnects to its file, an in-memory one travels whole."""
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))


class GridSearch(Searcher):
    """A fixed list of configs in order, each distinct config once."""

    def __init__(self, configs: list[dict], *, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.configs = configs
        self.position = 0
        self.taken: set[str] = set()

    def suggest(self, trial_id: str) -> dict | None:
        while self.position < len(self.configs):
            config = self.configs[self.position]
            self.position += 1
            if config_key(config) not in self.taken:
                self.taken.add(config_key(config))
                return config
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_bytes(pickle.dumps(self.__dict__))

    def restore(self, checkpoint_path: str) -> None:
        self.__dict__.update(pickle.loads(Path(checkpoint_path).read_bytes()))


def optuna_storage(path: Path) -> optuna.storages.RDBStorage:
    """A sqlite Optuna storage at `path` (created with its folder)."""
    import optuna

    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.RDBStorage(f"sqlite:///{path}")
