"""A sweep's search space as one branch per model: what each model's trials may sample.

A sweep file may write the space flat (`"model": tune.choice([...])` beside shared keys) or nested
(`"model": {"gru": {...}, "cnn": {...}, "tfidf_lr": {}}`). Both become the same `Branches`: for
each model, the shared keys that apply to it (TrialConfig fields, and the model's own parameters)
plus the keys written under it. A trial then carries only the keys its model uses, so TPE never
models a parameter the model ignores, and a model with nothing to sample is one fixed config.

Nothing here starts Ray: only Tune's search-space classes are read.
"""
from __future__ import annotations

import itertools
import json
import math
from typing import Any, Callable

from ray.tune.search.sample import Categorical, Domain, Float, Integer

from imdb_ray.config import TrialConfig
from imdb_ray.errors import UserError
from imdb_ray.models import get_model

Branches = dict[str, dict[str, Any]]  # model -> {key: constant | Domain | grid_search dict}
Fail = Callable[[str], None]


def is_grid(value) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def is_conditional(space: dict) -> bool:
    model = space.get("model")
    return isinstance(model, dict) and not is_grid(model)


def is_searched(value) -> bool:
    """Whether a space value varies between trials (a Tune domain or a grid)."""
    return isinstance(value, Domain) or is_grid(value)


def branches(space: dict[str, Any], fail: Fail) -> Branches:
    """The space as {model: its keys}: shared keys that apply to the model, then its own. A key
    applies when it is one of the model's parameters or a config field its family uses (a baseline
    has no learning rate)."""
    from imdb_ray.models import FAMILIES

    model = space.get("model", TrialConfig.model)
    shared = {k: v for k, v in space.items() if k != "model"}
    if is_conditional(space):
        own = model
        if not own:
            fail("space['model'] is an empty dict; name at least one model")
    else:
        own = {m: {} for m in candidates("model", model, fail)}
    fields = TrialConfig.fields()
    result: Branches = {}
    for name, keys in own.items():
        where = f"space['model'][{name!r}]"
        if not isinstance(name, str):
            fail(f"{where}: model names are strings")
        try:
            entry = get_model(name)
        except UserError as e:
            fail(f"{where}: {e}")
        if not isinstance(keys, dict):
            fail(f"{where} must be a dict of that model's parameters ({{}} for none), not {type(keys).__name__}")
        family = FAMILIES[entry.family]

        def applies(key: str) -> bool:
            return key in entry.params or (key in fields and family.uses(key))

        for key in keys:
            if key == "model" or not applies(key):
                fail(f"{where}[{key!r}]: {name} does not use {key!r} "
                     f"({name}'s parameters: {', '.join(entry.params) or '(none)'}; see `python -m imdb_ray models`)")
        shared_here = {k: v for k, v in shared.items() if applies(k)}
        result[name] = {**shared_here, **keys}
    return result


def candidates(key: str, value, fail: Fail) -> list:
    """Representative values of one space entry: every category, a numeric range's two ends."""
    if is_grid(value):
        options = list(value["grid_search"])
    elif isinstance(value, Categorical):
        options = list(value.categories)
    elif isinstance(value, Float):
        options = [value.lower, value.upper]
    elif isinstance(value, Integer):
        options = [value.lower, value.upper - 1]
    elif isinstance(value, Domain):
        fail(f"space[{key!r}]: {type(value).__name__} domains cannot be checked; use choice/uniform/loguniform/randint")
    else:
        options = [value]
    if not options:
        fail(f"space[{key!r}]: empty choice")
    return options


def config_key(config: dict) -> str:
    """A trial config's identity: two trials with the same key would compute the same thing."""
    return json.dumps(config, sort_keys=True, default=repr)


def branch_size(branch: dict) -> float:
    """How many distinct configs a branch can produce (inf with a continuous range)."""
    size = 1
    for value in branch.values():
        if is_grid(value):
            size *= len(value["grid_search"])
        elif isinstance(value, Categorical):
            size *= len(value.categories)
        elif isinstance(value, Domain):
            return math.inf
    return size


def grid_configs(tree: Branches, repeats: int, seed: int) -> list[dict]:
    """Grid search: every grid point of every branch, `repeats` times; other domains sampled (seeded)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    configs = []
    for _ in range(repeats):
        for model, branch in tree.items():
            axes = [[(k, o) for o in v["grid_search"]] for k, v in branch.items() if is_grid(v)]
            for point in itertools.product(*axes):
                config = {"model": model}
                for k, v in branch.items():
                    config[k] = v.sample(random_state=rng) if isinstance(v, Domain) else v
                configs.append({**config, **dict(point)})
    return configs


def count_configs(tree: Branches, search: str, num_samples: int) -> int:
    """Trials the sweep asks for: grid points x repeats for grid search, num_samples otherwise."""
    if search != "grid":
        return num_samples
    return num_samples * sum(math.prod(len(v["grid_search"]) for v in b.values() if is_grid(v)) for b in tree.values())


def describe(value) -> str:
    if is_grid(value):
        return f"grid_search({value['grid_search']})"
    if isinstance(value, Categorical):
        return f"choice({value.categories})"
    if isinstance(value, (Float, Integer)):
        log = "log" if type(value.sampler).__name__ == "_LogUniform" else ""
        return f"{type(value).__name__.lower()}[{value.lower}, {value.upper}] {log}".rstrip()
    return repr(value)


class DefineByRun:
    """The branches as an Optuna define-by-run space: draw the model, then only its branch's
    domains, each under `model.key` so TPE models each model's parameters separately. Returns the
    trial's flat config (constants included)."""

    def __init__(self, tree: Branches):
        from ray.tune.search.optuna import OptunaSearch

        self.tree = tree
        self.distributions: dict[str, dict[str, Any]] = {}
        self.labels: dict[str, dict[str, dict]] = {}  # model -> key -> {label: value} for non-primitive choices
        for model, branch in tree.items():
            domains = {}
            for key, value in branch.items():
                if isinstance(value, Categorical) and not all(_primitive(c) for c in value.categories):
                    self.labels.setdefault(model, {})[key] = {repr(c): c for c in value.categories}
                    value = Categorical([repr(c) for c in value.categories])
                if isinstance(value, Domain):
                    domains[f"{model}.{key}"] = value
            self.distributions[model] = OptunaSearch.convert_search_space(domains) if domains else {}

    @property
    def models(self) -> list[str]:
        return list(self.tree)

    def __call__(self, trial) -> dict:
        model = trial.suggest_categorical("model", self.models)
        config = {"model": model}
        for key, value in self.tree[model].items():
            if not isinstance(value, Domain):
                config[key] = value
                continue
            drawn = suggest(trial, f"{model}.{key}", self.distributions[model][f"{model}.{key}"])
            config[key] = self.labels.get(model, {}).get(key, {}).get(drawn, drawn)
        return config

    def optuna_params(self, config: dict) -> dict:
        """The Optuna parameter names and values that reproduce `config` (to enqueue it)."""
        model = config["model"]
        params = {"model": model}
        for key, value in self.tree[model].items():
            if isinstance(value, Domain):
                params[f"{model}.{key}"] = repr(config[key]) if key in self.labels.get(model, {}) else config[key]
        return params

    def finite_configs(self, model: str) -> list[dict] | None:
        """Every config of a branch with only categorical choices; None if it has a continuous range."""
        branch = self.tree[model]
        if branch_size(branch) == math.inf:
            return None
        axes = [[(k, c) for c in v.categories] if isinstance(v, Categorical) else [(k, v)] for k, v in branch.items()]
        return [{"model": model, **dict(point)} for point in itertools.product(*axes)]


def suggest(trial, name: str, distribution) -> Any:
    """One Optuna distribution drawn through the trial's public suggest_* API."""
    kind = type(distribution).__name__
    if kind == "CategoricalDistribution":
        return trial.suggest_categorical(name, distribution.choices)
    if kind == "IntDistribution":
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def _primitive(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
