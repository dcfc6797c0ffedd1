"""What a sweep file declares (`Sweep`), its validation, and the plan `--dry-run` prints.

The space is flat or nested by model (sweep/space.py): either way each trial gets only the keys
its model uses, and every value of every branch is checked here, before Ray starts.

Nothing here starts Ray: only Tune's search-space classes are read.
"""
from __future__ import annotations

import dataclasses
import math
import re
import runpy
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from imdb_ray import contracts
from imdb_ray.config import TrialConfig
from imdb_ray.contracts import Ge, NonNegative, NonNegativeFloat, Positive, PositiveFloat
from imdb_ray.metrics import METRICS, Metric, MetricName
from imdb_ray.errors import UserError, did_you_mean
from imdb_ray.redact import looks_secret
from imdb_ray.sweep.space import (Branches, branches, candidates, count_configs, describe, is_conditional, is_grid,
                                   is_searched)

RAY_TRAIN_FUNCTION_CPU = 0.01  # a ray_train trial's Tune function: its workers hold the real resources
# What the command line may override (each applied once, by `load_sweep`).
OVERRIDES = ("num_samples", "max_concurrent", "time_budget_s", "workers_per_trial", "cpus_per_worker", "gpus_per_worker")


@dataclass
class Sweep:
    """Everything a sweep file declares. `space` uses Ray Tune's search-space API."""

    name: str  # names the MLflow experiment, Ray's results folder and the registered model (letters, digits, _ . -)
    space: dict[str, Any]  # Tune domains and constants, flat or one branch per model (sweep/space.py)
    metric: MetricName = "val_accuracy"  # what trials are ranked on: their best epoch's value (imdb_ray/metrics.py)
    mode: Literal["max", "min"] | None = None  # None: the metric's own direction; a contradicting one is an error
    search: Literal["optuna", "random", "grid"] = "optuna"  # optuna: seeded TPE; grid: every tune.grid_search value
    scheduler: Literal["asha", "fifo"] = "asha"  # asha stops weak trials at rungs; fifo runs every trial out
    num_samples: Positive = 8  # trials to sample (grid: repeats of the grid)
    grace_period: Positive = 1  # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: Annotated[int, Ge(2)] = 2  # ASHA: 1/reduction_factor of the trials go on at each rung
    rungs_per_model: bool = False  # ASHA: rank a trial at a rung only against trials of its own model
    brackets: Positive = 1  # ASHA: Hyperband-style brackets, each starting its rungs later; 1 is plain ASHA
    startup_trials: NonNegative = 10  # optuna: trials sampled at random before TPE models the results
    # auto: direct for a one-worker trial (no Train controller, worker group or sync actors to start), ray_train for more
    trainer: Literal["auto", "ray_train", "direct"] = "auto"  # ray_train: Ray Train workers; direct: the loop in the trial's process
    workers_per_trial: Positive = 1  # data-parallel workers per trial (more than 1 needs ray_train)
    cpus_per_worker: PositiveFloat = 1.0  # CPUs each worker holds
    gpus_per_worker: NonNegativeFloat = 0.0  # fractions share a GPU: 0.25 packs four small trials on one
    gpus_per_trial: NonNegativeFloat | None = None  # alternative spelling: split evenly over workers_per_trial
    max_concurrent: Positive | None = None  # None: as many as the cluster's resources allow
    time_budget_s: PositiveFloat | None = None  # the search stops starting and running trials after this many seconds
    max_failures: NonNegative = 1  # retries of a failed trial, from its last checkpoint
    test_top: Positive = 3  # after the sweep, the best N trials by validation are evaluated once on test
    test_each: str | None = None  # ... and the best trial of each value of this parameter (e.g. "model")
    ensemble_top: NonNegative = 3  # `report` ensembles the top N tested trials (their logged predictions); 0: none
    confirm_top: NonNegative = 0  # after the search, train the best N configs again ...
    confirm_seeds: Positive = 3  # ... with this many new seeds each (as Ray trials), each evaluated once on test
    seed: NonNegative = 0  # the searcher's seed (and the grid's sampled values)
    source: Path | None = field(default=None, repr=False)

    def validate(self) -> "Sweep":
        """A checked, normalised copy (trainer auto resolved, gpus_per_trial folded into gpus_per_worker); self is unchanged.
        Raises UserError naming the file and the problem."""
        sweep = dataclasses.replace(self)
        sweep._check_types()
        if sweep.trainer == "auto":  # resolved here, not when the file is read: --workers-per-trial may change the count
            sweep.trainer = "direct" if sweep.workers_per_trial == 1 else "ray_train"
        if sweep.gpus_per_trial is not None:
            per_worker = sweep.gpus_per_trial / max(1, sweep.workers_per_trial)
            if sweep.gpus_per_worker not in (0, per_worker):
                sweep.fail("give gpus_per_trial or gpus_per_worker, not both")
            sweep.gpus_per_worker, sweep.gpus_per_trial = per_worker, None
        sweep._check_settings()
        sweep._check_space()
        if sweep.scheduler == "asha" and sweep.grace_period > (most := sweep.max_epochs()):
            sweep.fail(f"grace_period={sweep.grace_period} is more than the {most} epoch(s) a trial runs; lower it or raise epochs")
        return sweep

    def with_overrides(self, **overrides) -> "Sweep":
        """The same sweep with command-line overrides (None: keep the file's value), validated."""
        unknown = set(overrides) - set(OVERRIDES)
        if unknown:
            raise ValueError(f"not overridable: {sorted(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "gpus_per_worker" in given:  # the command line's GPU share replaces the file's, however it was spelled
            given["gpus_per_trial"] = None
        if given.get("workers_per_trial", 1) != 1 and self.trainer == "direct":  # several workers are a Ray Train run
            given["trainer"] = "ray_train"  # (a file's trainer="direct" was for its one worker; a direct trial is one process)
        return dataclasses.replace(self, **given).validate()

    def fail(self, message: str):
        raise UserError(f"{self.source or self.name}: {message}")

    def __post_init__(self) -> None:  # what a setting left to its default means (a wrong value fails validation)
        if self.mode is None and isinstance(self.metric, str) and self.metric in METRICS:
            self.mode = METRICS[self.metric].mode

    @property
    def selection(self) -> Metric:
        """The metric table's entry for this sweep's metric (its direction and the key trials report)."""
        return METRICS[self.metric]

    def _check_types(self) -> None:
        """Every setting against its annotation: type, range and choices (imdb_ray/contracts.py)."""
        for name, hint in contracts.hints(Sweep).items():
            if name not in ("source", "space"):
                try:
                    contracts.check(name, getattr(self, name), hint)
                except UserError as e:
                    self.fail(str(e))

    def _check_settings(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            self.fail(f"name={self.name!r}: use letters, digits, '_', '.' and '-' (it names folders and the MLflow experiment)")
        if not isinstance(self.space, dict) or not self.space:
            self.fail("the search space is empty; give at least 'model'")
        if self.mode != self.selection.mode:
            self.fail(f"mode={self.mode!r} contradicts metric={self.metric!r}, which is better when "
                      f"{'higher' if self.selection.mode == 'max' else 'lower'}; use mode={self.selection.mode!r} or leave mode out")
        if self.trainer == "direct" and self.workers_per_trial > 1:
            self.fail(f"workers_per_trial={self.workers_per_trial} needs trainer='ray_train' (a direct trial is one process)")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            self.fail(f"gpus_per_worker={self.gpus_per_worker}: above 1 it must be a whole number")

    def branches(self) -> Branches:
        """The space as one branch per model (sweep/space.py), the sweep's metric in each."""
        return {m: {**b, "metric": self.metric} for m, b in branches(self.space, self.fail).items()}  # metric: used by all

    def searched_keys(self) -> dict[str, list[str]]:
        """Per model, the keys its trials sample (what the console, leaderboard and reports show)."""
        return {m: [k for k, v in b.items() if is_searched(v)] for m, b in self.branches().items()}

    def _check_space(self) -> None:
        """Shared keys belong to a config field or to a model of the space; in every branch each
        representative value (each category, each end of a range) builds a valid TrialConfig for
        that model, alone and together with the others."""
        if self.space.get("metric", self.metric) != self.metric:
            self.fail(f"space['metric']: every trial uses the sweep's metric={self.metric!r}; remove it from the space")
        tree = self.branches()
        fields = TrialConfig.fields()
        for key in self.space:
            if key not in ("model", "metric") and not any(key in b for b in tree.values()):
                what = "uses this setting" if key in fields else "has this parameter, and it is no config field"
                self.fail(f"space[{key!r}]: no model in {list(tree)} {what} (see `python -m imdb_ray models`)")
        if self.test_each is not None and self.test_each != "model" and not any(self.test_each in b for b in tree.values()):
            self.fail(f"test_each={self.test_each!r} is not a key of the search space")
        own = self.space["model"] if is_conditional(self.space) else {}
        grid_keys = ["model"] if is_grid(self.space.get("model")) else []
        for model, branch in tree.items():
            def label(key: str) -> str:
                return f"space['model'][{model!r}][{key!r}]" if key in own.get(model, {}) else f"space[{key!r}]"

            grid_keys += [label(k) for k, v in branch.items() if is_grid(v)]
            self._check_branch(model, {k: candidates(label(k), v, self.fail) for k, v in branch.items()}, label,
                               f" ({model})" if len(tree) > 1 else "")
        if grid_keys and self.search != "grid":
            self.fail(f"tune.grid_search on {', '.join(dict.fromkeys(grid_keys))} needs search='grid' "
                      f"({self.search} samples, it does not enumerate)")
        if self.search == "grid" and not grid_keys:
            self.fail("search='grid' but the space has no tune.grid_search values")

    def _check_branch(self, model: str, values: dict[str, list], label, which: str) -> None:
        if "cuda" in values.get("device", []) and self.gpus_per_worker == 0:
            self.fail(f"{label('device')} 'cuda'{which} but gpus_per_worker=0: its trials would get no GPU; "
                      "give gpus_per_worker (or gpus_per_trial), or use device='auto'")
        for key, options in values.items():  # Ray writes configs into its own result files: keep secrets out
            if any(isinstance(o, str) and looks_secret("", o) for o in options):
                self.fail(f"{label(key)} holds what looks like a credential; give credentials through the "
                          "environment (e.g. HF_TOKEN), never in a sweep file")
        base = {k: v[0] for k, v in values.items()}
        for together in (False, True):  # each value alone first, so the error names its key; then together
            for key, options in values.items():  # (n_train with val_fraction, a vectors file with embed_dim, ...)
                for option in options:
                    try:
                        TrialConfig.from_flat({**(base if together else {}), key: option, "model": model})
                    except UserError as e:
                        self.fail(f"{label(key)} value {option!r}{which}: {e}")

    # ------------------------------------------------------------------------------ resources
    def trial_resources(self) -> dict[str, float]:
        """What one trial holds. In ray_train mode the Tune function itself only needs a sliver of
        CPU: the workers' resources are claimed by Ray Train's own placement group."""
        if self.trainer == "direct":
            return {"CPU": self.cpus_per_worker, "GPU": self.gpus_per_worker}
        return {"CPU": RAY_TRAIN_FUNCTION_CPU}

    def devices_per_trial(self) -> tuple[str, float]:
        """The devices a trial's cost is counted in: its GPUs if it has any, else its CPUs."""
        if self.gpus_per_worker > 0:
            return "GPU", self.workers_per_trial * self.gpus_per_worker
        return "CPU", self.workers_per_trial * self.cpus_per_worker

    def concurrency(self, cluster: dict[str, float]) -> int:
        """Trials that fit at once, counting the Train workers, so workers never starve behind
        Tune functions holding the CPUs (the 2-CPU deadlock)."""
        cpu_per_trial = self.workers_per_trial * self.cpus_per_worker + (RAY_TRAIN_FUNCTION_CPU if self.trainer == "ray_train" else 0)
        fits = math.floor(cluster.get("CPU", 1) / cpu_per_trial + 1e-9)
        gpu = self.workers_per_trial * self.gpus_per_worker
        if gpu > 0:
            gpus = math.floor(cluster.get("GPU", 0) + 1e-9)
            if self.gpus_per_worker < 1:  # Ray packs fractions per GPU: floor(1 / fraction) workers on each
                fits = min(fits, math.floor(1 / self.gpus_per_worker + 1e-9) * gpus // self.workers_per_trial)
            else:
                fits = min(fits, math.floor(gpus / gpu + 1e-9))
        if fits < 1:
            raise UserError(f"{self.source or self.name}: one trial needs {cpu_per_trial:g} CPU and {gpu:g} GPU; "
                            f"the cluster has {cluster.get('CPU', 0):g} CPU and {cluster.get('GPU', 0):g} GPU")
        limit = self.max_concurrent or fits
        return max(1, min(fits, limit, self.trial_count()))

    def trial_count(self) -> int:
        """Trials the sweep asks for (fewer run when configs repeat: each distinct config runs once)."""
        return count_configs(self.branches(), self.search, self.num_samples)

    def experiment_path(self, storage: str, stage: str = "") -> str:
        """Where Ray Tune keeps this sweep (stage "confirm": its confirmation reruns, beside it)."""
        return f"{absolute_storage(storage).rstrip('/')}/{self.name}" + (f"-{stage}" if stage else "")

    def epochs_by_model(self) -> dict[str, int]:
        """The most epochs each model's trials can run: 1 for a model fitted in one pass (a baseline)."""
        from imdb_ray.models import FAMILIES, get_model

        return {m: self._most_epochs(b) if FAMILIES[get_model(m).family].uses("epochs") else 1
                for m, b in self.branches().items()}

    def one_pass_models(self) -> list[str]:
        """The sweep's models that train in one pass (tfidf_lr, nbsvm): one score, no epochs for ASHA to stop between."""
        return [m for m in self.branches() if not TrialConfig.from_flat({"model": m}, strict=False).family.neural]

    def max_epochs(self) -> int:
        """The most epochs a trial can run (ASHA's max_t)."""
        return max(self._most_epochs(b) for b in self.branches().values())

    def _most_epochs(self, branch: dict) -> int:
        return max(candidates("space['epochs']", branch.get("epochs", TrialConfig.epochs), self.fail))


def absolute_storage(storage: str) -> str:
    """A URI as it is, a path made absolute (Tune refuses relative storage paths)."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


# The settings `sweep` takes as flags (the keyword overrides of load_sweep), for a KEY=VALUE that names one of them.
SETTING_FLAGS = {"num_samples": "--num-samples", "max_concurrent": "--max-concurrent", "time_budget_s": "--time-budget",
                 "cpus_per_worker": "--cpus-per-worker", "gpus_per_worker": "--gpus-per-worker"}


def load_sweep(path: str | Path, space_overrides: list[str] = (), **overrides) -> Sweep:
    """Run the sweep file (it is Python: only run files you trust); its `sweep`, with the command
    line's overrides applied (settings, and `key=value` constants of the space), validated."""
    path = Path(path).resolve()
    if not path.is_file():
        raise UserError(f"{path}: sweep file not found")
    try:
        namespace = runpy.run_path(str(path), run_name="__sweep__")
    except SyntaxError as e:
        raise UserError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}:{_line_in(path, e)}: {type(e).__name__} while loading: {e}{_nearest_setting(e)}") from None
    sweep = namespace.get("sweep")
    if not isinstance(sweep, Sweep):
        raise UserError(f"{path}: define `sweep = Sweep(...)` (from imdb_ray.sweep import Sweep)")
    sweep = dataclasses.replace(sweep, source=path)
    if space_overrides:
        sweep = dataclasses.replace(sweep, space=override_space(sweep, space_overrides))
    return sweep.with_overrides(**overrides)


def _line_in(path: Path, error: BaseException) -> int | str:
    """The line of the sweep file where `error` was raised, or the file's last line on the way to it (an error
    inside a library the file called); '?' if the file is not on its traceback at all."""
    lines = [line for frame, line in traceback.walk_tb(error.__traceback__) if Path(frame.f_code.co_filename) == path]
    return lines[-1] if lines else "?"


def _nearest_setting(error: BaseException) -> str:
    """For a misspelt Sweep(...) argument, the setting it most likely meant."""
    unknown = re.search(r"Sweep\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(error))
    if not unknown:
        return ""
    return did_you_mean(unknown[1], [f.name for f in dataclasses.fields(Sweep) if f.init]) or "; every setting: docs/settings.md"


def override_space(sweep: Sweep, assignments: list[str]) -> dict:
    """The space with `key=value` (a shared constant) and `model.key=value` (one branch's) replaced or added, as
    Hydra and W&B users write them; a searched key is not replaced (edit the file to change a search). In a space of
    branches, `model=gru` (or `model=gru,cnn`) keeps those branches, their searches included."""
    space = {k: (dict(v) if k == "model" and is_conditional(sweep.space) else v) for k, v in sweep.space.items()}
    if is_conditional(sweep.space):
        space["model"] = {m: dict(b) for m, b in space["model"].items()}
    given: dict[str, str] = {}
    for text in assignments:
        key, sep, raw = text.partition("=")
        if sep and key in given:  # the last would win silently, and a sweep runs for hours on it
            sweep.fail(f"override {text!r}: {key} is given twice ({given[key]} and {text}); give it once")
        given[key] = text
        if key == "model" and is_conditional(space):  # `model=gru`: that branch's search alone (not gru unsearched)
            space["model"] = kept_branches(sweep, space["model"], raw, text)
            continue
        model, _, name = key.rpartition(".")
        if not sep or not name:
            sweep.fail(f"override {text!r}: write key=value (or model.key=value for one model's branch)")
        if model and not (is_conditional(space) and model in space["model"]):
            sweep.fail(f"override {text!r}: the space has no branch '{model}' (its branches: "
                       f"{', '.join(space['model']) if is_conditional(space) else 'none, it is flat'})")
        if not model and name in {f.name for f in dataclasses.fields(Sweep)} - {"space", *TrialConfig.fields()}:
            sweep.fail(f"override {text!r}: {name} is a setting of Sweep(...), not of its space; "
                       + (f"pass {SETTING_FLAGS[name]} {raw}" if name in SETTING_FLAGS else "edit it in the sweep file"))
        target = space["model"][model] if model else space
        owners = [m for m, b in space["model"].items() if name in b] if not model and is_conditional(space) else []
        if owners:  # a branch's own value wins over a shared one: the override would change nothing
            sweep.fail(f"override {text!r}: {', '.join(owners)} set(s) {name} in its own branch; write "
                       + " ".join(f"{m}.{name}=..." for m in owners))
        shared_default = getattr(TrialConfig, name, None) if name in TrialConfig.fields() else None
        current = target.get(name, space.get(name, shared_default))
        if is_searched(current) and name in target:
            sweep.fail(f"override {text!r}: {name} is searched ({describe(current)}); overrides replace constants")
        target[name] = contracts.parse_value(raw, current)
    return space


def kept_branches(sweep: Sweep, tree: dict, raw: str, text: str) -> dict:
    """The branches an override `model=NAME[,NAME...]` names, each kept whole, in the order given."""
    wanted = [m.strip() for m in raw.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in tree]
    if not wanted or unknown:
        sweep.fail(f"override {text!r}: {'no branch ' + repr(unknown[0]) if unknown else 'no model named'}; the space's "
                   f"branches: {', '.join(tree)} (model=NAME or model=NAME,NAME keeps those)"
                   + (did_you_mean(unknown[0], tree) if unknown else ""))
    return {m: tree[m] for m in dict.fromkeys(wanted)}


def plan(sweep: Sweep, cluster: dict[str, float] | None = None) -> str:
    """What --dry-run prints: the settings and the space, no Ray started."""
    lines = [f"sweep {sweep.name} ({sweep.source})",
             f"  search={sweep.search} scheduler={sweep.scheduler} num_samples={sweep.num_samples} "
             f"metric={sweep.metric} ({sweep.mode}) trainer={sweep.trainer}"
             + (f" time_budget={sweep.time_budget_s:g}s" if sweep.time_budget_s else ""),
             f"  per trial: {sweep.workers_per_trial} worker(s) x {sweep.cpus_per_worker:g} CPU, {sweep.gpus_per_worker:g} GPU"]
    if cluster:
        try:
            fits = sweep.concurrency(cluster)
        except UserError as e:
            fits = f"none, {str(e).split(': ', 1)[-1]} (needs a cluster: --address)"
        lines.append(f"  trials at once on this machine ({cluster.get('CPU', 0):g} CPU / {cluster.get('GPU', 0):g} GPU): {fits}")
    tree = sweep.branches()
    lines.append(f"  space: {len(tree)} model(s); each trial gets only its model's keys")
    for model, branch in tree.items():
        searched = ", ".join(f"{k}={describe(v)}" for k, v in branch.items() if is_searched(v))
        # constants written under the model that replace (or add to) the shared ones, e.g. the CNN's max_len
        own = ", ".join(f"{k}={v!r}" for k, v in branch.items()
                        if k != "metric" and not is_searched(v) and (k not in sweep.space or sweep.space[k] != v))
        lines.append(f"    {model}: {searched or 'nothing to sample (runs once)'}" + (f"; fixed for {model}: {own}" if own else ""))
    fixed = {k: v for k, v in sweep.space.items() if k != "model" and not is_searched(v)}
    lines.append("    fixed: " + ", ".join(f"{k}={v!r}" for k, v in fixed.items()))
    if sweep.search != "grid" and sweep.num_samples < len(tree):
        lines.append(f"  note: num_samples={sweep.num_samples} < {len(tree)} models: only the first {sweep.num_samples} get a trial")
    return "\n".join(lines)
