"""Replays of a recorded curve table through the real engine (benchmarks/search_efficiency.py).

Each replay is a real Ray Tune `Tuner` with the searcher and scheduler a sweep builds (imdb_ray/sweep/runner.py:
build_search, build_scheduler) over the table's configs written as a conditional sweep; its trainable reports
the recorded epochs instead of training. One trial at a time, so a replay is deterministic for its seed. What
each reported epoch cost (its recorded wall seconds, one trial-epoch) is summed in the order results arrive.
"""
from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass, field

import numpy as np

CONFIG_KEYS = ("model", "lr", "hidden", "num_filters", "dropout", "freeze_embeddings")


@dataclass(frozen=True)
class Method:
    """A searcher + scheduler as a sweep file would set them (levers included)."""

    name: str
    search: str = "optuna"
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    settings: dict = field(default_factory=dict)  # further Sweep settings the lever changes


def curve_key(config: dict) -> str:
    return json.dumps({k: config[k] for k in sorted(config) if k in CONFIG_KEYS})


def decode(run: dict) -> dict:
    """A table row's epochs with numpy arrays: val probabilities (0-1) and test correctness bits."""
    n_val, n_test = run["n_val"], run["n_test"]
    return {**run, "epochs": [{**e, "val_probs": np.frombuffer(base64.b64decode(e["val_probs"]), dtype=np.uint8) / 255.0,
                               "test_right": np.unpackbits(np.frombuffer(base64.b64decode(e["test_right"]), dtype=np.uint8))[:n_test]}
                              for e in run["epochs"]],
            "val_labels": np.array([int(c) for c in run["val_labels"]])[:n_val]}


def sweep_space(rows: list[dict]) -> dict:
    """The table's configs as a conditional sweep space: each model's recorded values as choices."""
    from ray import tune

    space: dict = {}
    for row in rows:
        branch = space.setdefault(row["config"]["model"], {})
        for key, value in row["config"].items():
            if key != "model":
                branch.setdefault(key, set()).add(value)
    epochs = max(len(row["epochs"]) for row in rows)
    return {"model": {m: {k: tune.choice(sorted(v)) for k, v in b.items()} for m, b in space.items()}, "epochs": epochs}


def replay(curves: dict[str, list[dict]], space: dict, method: Method, seed: int, storage: str) -> list[dict]:
    """One replay; every reported epoch in arrival order: {key, epoch, val, seconds}."""
    from ray import tune

    from imdb_ray.sweep import Sweep
    from imdb_ray.sweep.runner import build_scheduler, build_search

    sweep = Sweep(name="replay", space=space, search=method.search, scheduler=method.scheduler, num_samples=len(curves),
                  seed=seed, grace_period=method.grace_period, reduction_factor=method.reduction_factor, trainer="direct",
                  **method.settings).validate()
    table = {k: [{"val_accuracy": e["val_accuracy"], "seconds": e["seconds"]} for e in v] for k, v in curves.items()}
    arrivals: list[dict] = []

    class Arrivals(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            arrivals.append({"key": result["key"], "epoch": result["epoch"], "val": result["val_accuracy"],
                             "seconds": result["seconds"]})

    def lookup(config: dict) -> None:  # self-contained: Ray ships it to its worker by value
        import json

        from ray import tune

        key = json.dumps({k: config[k] for k in sorted(config) if k in CONFIG_KEYS})
        curve = table[key]
        for epoch, e in enumerate(curve, 1):
            tune.report({"key": key, "val_accuracy": e["val_accuracy"], "seconds": e["seconds"], "epoch": epoch,
                         "best_val_accuracy": max(x["val_accuracy"] for x in curve[:epoch]), "finished": epoch == len(curve)})

    tuner = tune.Tuner(
        tune.with_resources(lookup, {"CPU": 1}),
        tune_config=tune.TuneConfig(metric="best_val_accuracy", mode="max", search_alg=build_search(sweep, 1),
                                    scheduler=build_scheduler(sweep), num_samples=len(curves), max_concurrent_trials=1,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=f"{method.name}-{seed}", storage_path=storage, verbose=0, callbacks=[Arrivals()]))
    tuner.fit()
    return arrivals


def replay_many(curves: dict, space: dict, tasks: list[tuple[Method, int]]) -> list[tuple[str, int, list[dict]]]:
    """One process: a local Ray, then the given (method, seed) replays in turn."""
    import logging
    import os

    import optuna
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # a replayed epoch costs nothing: what is left is Tune's own bookkeeping per result and per trial
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1000000")  # no experiment-state snapshot between trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    storage, out = tempfile.mkdtemp(prefix="imdb_ray_replay_"), []
    try:
        for method, seed in tasks:
            out.append((method.name, seed, replay(curves, space, method, seed, storage)))
            print(f"[replay] {method.name} seed {seed}: {len(out[-1][2])} trial-epochs", flush=True)
    finally:
        ray.shutdown()
    return out


def incumbents(arrivals: list[dict], budgets: list[float], unit: str) -> list[tuple[str, int] | None]:
    """At each budget (in `unit`: "seconds" or "epochs" spent so far), the (config key, epoch) with the best
    validation accuracy reported within it: what a sweep cut there would select."""
    out, best, spent, i = [], None, 0.0, 0
    for budget in budgets:
        while i < len(arrivals) and spent + (arrivals[i]["seconds"] if unit == "seconds" else 1) <= budget + 1e-9:
            a = arrivals[i]
            spent += a["seconds"] if unit == "seconds" else 1
            if best is None or a["val"] > best[0]:
                best = (a["val"], a["key"], a["epoch"])
            i += 1
        out.append(None if best is None else (best[1], best[2]))
    return out


def paired_bootstrap_p(labels: np.ndarray, a: np.ndarray, b: np.ndarray, samples: int = 2000, seed: int = 0) -> float:
    """One-sided p-value that predictions `b` are more accurate than `a` on the same reviews (paired bootstrap of
    the per-review correctness difference, centred: the share of resampled differences at least as large)."""
    diff = ((b >= 0.5) == labels).astype(float) - ((a >= 0.5) == labels).astype(float)
    observed = diff.mean()
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(samples, len(diff)))].mean(axis=1)
    return float(np.mean(means - observed >= observed))


def spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)
