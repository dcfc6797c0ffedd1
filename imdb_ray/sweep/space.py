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
from typing import TYPE_CHECKING, Any, Callable

from ray.tune.search.sample import Categorical, Domain, Float, Function, Integer, LogUniform, Normal

from imdb_ray.config import TrialConfig
from imdb_ray.errors import UserError, did_you_mean

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

Branches = dict[str, dict[str, Any]]  # model -> {key: constant | Domain | grid_search dict}
Fail = Callable[[str], None]


def is_grid(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def is_conditional(space: dict) -> bool:
    model = space.get("model")
    return isinstance(model, dict) and not is_grid(model)


def is_searched(value: Any) -> bool:
    """Whether a space value varies between trials (a Tune domain or a grid)."""
    return isinstance(value, Domain) or is_grid(value)


def branches(space: dict[str, Any], fail: Fail) -> Branches:
    """The space as {model: its keys}: shared keys that apply to the model, then its own. A key
    applies when it is one of the model's parameters or a config field its family uses (a baseline
    has no learning rate)."""
    from imdb_ray.models import FAMILIES, get_model  # (the registry imports torch: not for `sweep --help`)

    model = space.get("model", TrialConfig.model)
    shared = {k: v for k, v in space.items() if k != "model"}
    if is_conditional(space):
        own = model
        if not own:
            fail("space['model'] is an empty dict; name at least one model")
    else:
        own = {m: {} for m in candidates("space['model']", model, fail)}
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
                fail(f"{where}[{key!r}]: {name} does not use {key!r}{did_you_mean(key, entry.params)} "
                     f"({name}'s parameters: {', '.join(entry.params) or '(none)'}; see `python -m imdb_ray models`)")
        shared_here = {k: v for k, v in shared.items() if applies(k)}
        result[name] = {**shared_here, **keys}
    return result


def candidates(where: str, value: Any, fail: Fail) -> list:
    """Representative values of one space entry: every category and grid value, a range's two ends (as
    the domain produces them: rounded to its step, an integer range's upper end exclusive). A domain
    whose values cannot be known before the sweep is refused by name. `where` names the entry in errors."""
    if is_grid(value):
        options = list(value["grid_search"])
    elif isinstance(value, Categorical):
        options = list(value.categories)
    elif isinstance(value, (Float, Integer)):
        options = range_ends(where, value, fail)
    elif isinstance(value, Function):
        fail(f"{where}: tune.sample_from cannot be checked before the sweep starts; "
             "use tune.choice, uniform, loguniform, randint or grid_search")
    elif isinstance(value, Domain):
        fail(f"{where}: a {type(value).__name__} domain cannot be checked; use choice/uniform/loguniform/randint")
    else:
        options = [value]
    if not options:
        fail(f"{where}: empty choice")
    return options


def range_ends(where: str, value: Float | Integer, fail: Fail) -> list:
    """The smallest and largest value a numeric domain can produce (Ray 2.60's sampling rules)."""
    sampler = value.get_sampler()
    step = getattr(sampler, "q", None)
    if isinstance(sampler, Normal) or isinstance(getattr(sampler, "sampler", None), Normal):
        fail(f"{where}: tune.randn draws unbounded values, which no setting here accepts; "
             "use tune.uniform or tune.loguniform within the setting's range")
    lower, upper = value.lower, value.upper
    if lower > upper:
        fail(f"{where}: {_call(value)} has its lower bound above its upper; swap them")
    if isinstance(value, Integer) and step in (None, 1) and lower == upper:
        fail(f"{where}: {_call(value)} is empty (its upper bound is exclusive); use a constant or raise the upper bound")
    if step is None:
        return [lower, upper - 1] if isinstance(value, Integer) else [lower, upper]
    lo, hi = math.ceil(lower / step - 1e-9) * step, math.floor(upper / step + 1e-9) * step
    if isinstance(value, Integer):
        return [int(lo), int(hi) - (1 if step == 1 else 0)]
    return [value.cast(lo), value.cast(hi)]


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


def describe(value: Any) -> str:
    """A space entry as --dry-run shows it: the Tune call that would make it (log scale and step kept)."""
    if is_grid(value):
        return f"grid_search({value['grid_search']})"
    if isinstance(value, Categorical):
        return f"choice({value.categories})"
    if isinstance(value, (Float, Integer)):
        return _call(value)
    return repr(value)


def _call(value: Float | Integer) -> str:
    """tune.qloguniform(0.0001, 0.01, 0.0001) and the like, from a domain."""
    sampler = value.get_sampler()
    step = getattr(sampler, "q", None)
    log = isinstance(getattr(sampler, "sampler", sampler), LogUniform)
    name = ("log" if log else "") + ("randint" if isinstance(value, Integer) else "uniform")
    if isinstance(value, Float) and log:
        name = "loguniform"
    prefix = "q" if step is not None and not (isinstance(value, Integer) and step == 1 and not log) else ""
    args = f"{value.lower}, {value.upper}" + (f", {step}" if prefix else "")
    return f"tune.{prefix}{name}({args})"


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


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """One Optuna distribution drawn through the trial's public suggest_* API."""
    kind = type(distribution).__name__
    if kind == "CategoricalDistribution":
        return trial.suggest_categorical(name, distribution.choices)
    if kind == "IntDistribution":
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def _primitive(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
