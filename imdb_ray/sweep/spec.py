"""What a sweep file declares (`Sweep`), its validation, and the plan `--dry-run` prints.

Conditional parameters: a sweep space is flat. A key that is a TrialConfig field applies to every
trial; any other key is a model parameter and is passed only to the models that take it (so
`hidden` reaches the RNNs and is ignored by `cnn`). Every such key must belong to at least one
model the space can pick; Optuna samples it in every trial, which TPE handles fine.

Nothing here starts Ray: only Tune's search-space classes are read.
"""
from __future__ import annotations

import dataclasses
import math
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.search.sample import Categorical, Domain, Float, Integer

from imdb_ray import typecheck
from imdb_ray.config import TrialConfig
from imdb_ray.errors import UserError
from imdb_ray.redact import looks_secret
from imdb_ray.models import get_model

SEARCHES = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "fifo")
TRAINERS = ("ray_train", "direct")
RAY_TRAIN_FUNCTION_CPU = 0.01  # a ray_train trial's Tune function: its workers hold the real resources
# What the command line may override (each applied once, by `load_sweep`).
OVERRIDES = ("num_samples", "max_concurrent", "time_budget_s", "cpus_per_worker", "gpus_per_worker")


@dataclass
class Sweep:
    """Everything a sweep file declares. `space` uses Ray Tune's search-space API."""

    name: str
    space: dict[str, Any]
    metric: str = "val_accuracy"
    mode: str = "max"
    search: str = "optuna"  # optuna (seeded TPE) | random | grid (tune.grid_search values)
    scheduler: str = "asha"  # asha | fifo
    num_samples: int = 8
    grace_period: int = 1  # ASHA: epochs every trial gets before it can be stopped
    reduction_factor: int = 2
    trainer: str = "ray_train"  # ray_train | direct
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # fractions share a GPU: 0.25 packs four small trials on one
    gpus_per_trial: float | None = None  # alternative spelling: split evenly over workers_per_trial
    max_concurrent: int | None = None  # None: as many as the cluster's resources allow
    time_budget_s: float | None = None
    max_failures: int = 1  # retries of a failed trial, from its last checkpoint
    test_top: int = 3  # after the sweep, the best N trials by validation are evaluated once on test
    test_each: str | None = None  # ... and the best trial of each value of this parameter (e.g. "model")
    seed: int = 0
    source: Path | None = field(default=None, repr=False)

    def validate(self) -> "Sweep":
        """A checked, normalised copy (gpus_per_trial folded into gpus_per_worker); self is unchanged.
        Raises UserError naming the file and the problem."""
        sweep = dataclasses.replace(self)
        sweep._check_types()
        if sweep.gpus_per_trial is not None:
            per_worker = sweep.gpus_per_trial / max(1, sweep.workers_per_trial)
            if sweep.gpus_per_worker not in (0, per_worker):
                sweep.fail("give gpus_per_trial or gpus_per_worker, not both")
            sweep.gpus_per_worker, sweep.gpus_per_trial = per_worker, None
        sweep._check_settings()
        sweep._check_space()
        return sweep

    def with_overrides(self, **overrides) -> "Sweep":
        """The same sweep with command-line overrides (None: keep the file's value), validated."""
        unknown = set(overrides) - set(OVERRIDES)
        if unknown:
            raise ValueError(f"not overridable: {sorted(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        if "gpus_per_worker" in given:  # the command line's GPU share replaces the file's, however it was spelled
            given["gpus_per_trial"] = None
        return dataclasses.replace(self, **given).validate()

    def fail(self, message: str):
        raise UserError(f"{self.source or self.name}: {message}")

    def _check_types(self) -> None:
        for name, hint in typecheck.hints(Sweep).items():
            if name not in ("source", "return"):
                try:
                    typecheck.check(name, getattr(self, name), hint)
                except UserError as e:
                    self.fail(str(e))

    def _check_settings(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            self.fail(f"name={self.name!r}: use letters, digits, '_', '.' and '-' (it names folders and the MLflow experiment)")
        if not isinstance(self.space, dict) or not self.space:
            self.fail("the search space is empty; give at least 'model'")
        for name, options in (("search", SEARCHES), ("scheduler", SCHEDULERS), ("trainer", TRAINERS),
                              ("mode", ("min", "max"))):
            if getattr(self, name) not in options:
                self.fail(f"{name}={getattr(self, name)!r} is not one of {', '.join(options)}")
        if self.test_each is not None and self.test_each not in self.space:
            self.fail(f"test_each={self.test_each!r} is not a key of the search space")
        if self.metric not in ("val_accuracy", "val_f1", "val_loss"):
            self.fail(f"metric={self.metric!r}: sweeps select on validation metrics only (val_accuracy, val_f1, val_loss)")
        if self.test_top < 1:
            self.fail("test_top must be >= 1 (the best trial is always evaluated on test)")
        if self.num_samples < 1 or self.workers_per_trial < 1 or self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            self.fail("num_samples and workers_per_trial must be >= 1, cpus_per_worker > 0, gpus_per_worker >= 0")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            self.fail(f"gpus_per_worker={self.gpus_per_worker}: above 1 it must be a whole number")
        grid_keys = [k for k, v in self.space.items() if is_grid(v)]
        if grid_keys and self.search == "optuna":
            self.fail(f"tune.grid_search on {', '.join(grid_keys)} needs search='grid' (Optuna samples, it does not enumerate)")
        if self.search == "grid" and not grid_keys:
            self.fail("search='grid' but the space has no tune.grid_search values")

    def _check_space(self) -> None:
        """Every key belongs to a config field or to a model the space can pick; every representative
        value (each category, each end of a range) builds a valid TrialConfig with every model."""
        values = {k: candidates(k, v, self.fail) for k, v in self.space.items()}
        for key, options in values.items():  # Ray writes the space into its own result files: keep secrets out
            if any(isinstance(o, str) and looks_secret("", o) for o in options):
                self.fail(f"space[{key!r}] holds what looks like a credential; give credentials through the "
                          "environment (e.g. HF_TOKEN), never in a sweep file")
        models = values.get("model", ["gru"])
        fields = TrialConfig.fields()
        for key in self.space:
            if key not in fields and not any(key in get_model(m).params for m in models):
                self.fail(f"space[{key!r}]: no model in {models} has this parameter, and it is no config field "
                          "(see `python -m imdb_ray models`)")
        for key, options in values.items():  # each value alone first, so the error names its key
            for option, model in ((o, m) for o in options for m in models):
                try:
                    TrialConfig.from_flat({"model": option} if key == "model" else {"model": model, key: option}, strict=False)
                except UserError as e:
                    self.fail(f"space[{key!r}] value {option!r}: {e}")
        base = {k: v[0] for k, v in values.items()}
        for model in models:  # then together (n_train with val_fraction, a vectors file with embed_dim, ...)
            for key, options in values.items():
                for option in options:
                    try:
                        TrialConfig.from_flat({**base, "model": model, key: option}, strict=False)
                    except UserError as e:
                        self.fail(f"space[{key!r}] value {option!r}: {e}")

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
        return max(1, min(fits, limit, self.num_samples * max(1, grid_size(self.space))))

    def experiment_path(self, storage: str) -> str:
        """Where Ray Tune keeps this sweep."""
        return f"{absolute_storage(storage).rstrip('/')}/{self.name}"

    def max_epochs(self) -> int:
        """The most epochs a trial can run (ASHA's max_t)."""
        epochs = self.space.get("epochs", TrialConfig.epochs)
        return epochs if isinstance(epochs, int) else max(candidates("epochs", epochs, self.fail))


def absolute_storage(storage: str) -> str:
    """A URI as it is, a path made absolute (Tune refuses relative storage paths)."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def is_grid(value) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def grid_size(space: dict) -> int:
    return math.prod(len(v["grid_search"]) for v in space.values() if is_grid(v))


def candidates(key: str, value, fail) -> list:
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


def load_sweep(path: str | Path, **overrides) -> Sweep:
    """Run the sweep file (it is Python: only run files you trust); its `sweep`, with the command
    line's overrides applied, validated."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: sweep file not found")
    try:
        namespace = runpy.run_path(str(path), run_name="__sweep__")
    except SyntaxError as e:
        raise UserError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path}: {type(e).__name__} while loading: {e}") from None
    sweep = namespace.get("sweep")
    if not isinstance(sweep, Sweep):
        raise UserError(f"{path}: define `sweep = Sweep(...)` (from imdb_ray.sweep import Sweep)")
    return dataclasses.replace(sweep, source=path.resolve()).with_overrides(**overrides)


def describe(value) -> str:
    if is_grid(value):
        return f"grid_search({value['grid_search']})"
    if isinstance(value, Categorical):
        return f"choice({value.categories})"
    if isinstance(value, (Float, Integer)):
        log = "log" if type(value.sampler).__name__ == "_LogUniform" else ""
        return f"{type(value).__name__.lower()}[{value.lower}, {value.upper}] {log}".rstrip()
    return repr(value)


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
    lines.append("  space:")
    for k, v in sweep.space.items():
        lines.append(f"    {k} = {describe(v)}")
    return "\n".join(lines)
