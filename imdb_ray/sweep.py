"""Sweep files -> a Ray Tune run. Each trial runs the one training loop, either inside Ray Train
workers (`trainer="ray_train"`, DDP-ready, ~20 s fixed cost) or in the Tune trial process itself
(`trainer="direct"`, for cheap single-device trials).

Conditional parameters: a sweep space is flat. A key that is a TrialConfig field applies to every
trial; any other key is a model parameter and is passed only to the models that take it (so
`hidden` reaches the RNNs and is ignored by `cnn`). Every such key must belong to at least one
model the space can pick; Optuna samples it in every trial, which TPE handles fine.
"""
from __future__ import annotations

import dataclasses
from contextlib import nullcontext
import math
import os
import runpy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from imdb_ray.config import TrialConfig
from imdb_ray.errors import UserError
from imdb_ray.models import get_model

SEARCHES = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "fifo")
TRAINERS = ("ray_train", "direct")


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

    # ---------------------------------------------------------------------------- validation
    def validate(self) -> "Sweep":
        where = str(self.source or self.name)

        def fail(msg: str):
            raise UserError(f"{where}: {msg}")

        if self.gpus_per_trial is not None:
            if self.gpus_per_worker not in (0, self.gpus_per_trial / max(1, self.workers_per_trial)):
                fail("give gpus_per_trial or gpus_per_worker, not both")
            self.gpus_per_worker = self.gpus_per_trial / max(1, self.workers_per_trial)

        if not isinstance(self.space, dict) or not self.space:
            fail("the search space is empty; give at least 'model'")
        for name, options in (("search", SEARCHES), ("scheduler", SCHEDULERS), ("trainer", TRAINERS),
                              ("mode", ("min", "max"))):
            if getattr(self, name) not in options:
                fail(f"{name}={getattr(self, name)!r} is not one of {', '.join(options)}")
        if self.test_each is not None and self.test_each not in self.space:
            fail(f"test_each={self.test_each!r} is not a key of the search space")
        if self.metric not in ("val_accuracy", "val_f1", "val_loss"):
            fail(f"metric={self.metric!r}: sweeps select on validation metrics only (val_accuracy, val_f1, val_loss)")
        if self.test_top < 1:
            fail("test_top must be >= 1 (the best trial is always evaluated on test)")
        if self.num_samples < 1 or self.workers_per_trial < 1 or self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            fail("num_samples and workers_per_trial must be >= 1, cpus_per_worker > 0, gpus_per_worker >= 0")
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            fail(f"gpus_per_worker={self.gpus_per_worker}: above 1 it must be a whole number")
        grid_keys = [k for k, v in self.space.items() if _is_grid(v)]
        if grid_keys and self.search == "optuna":
            fail(f"tune.grid_search on {', '.join(grid_keys)} needs search='grid' (Optuna samples, it does not enumerate)")
        if self.search == "grid" and not grid_keys:
            fail("search='grid' but the space has no tune.grid_search values")

        values = {k: _candidates(k, v, fail) for k, v in self.space.items()}
        models = values.get("model", ["gru"])
        fields = TrialConfig.fields()
        for key in self.space:
            if key not in fields and not any(key in get_model(m).params for m in models):
                fail(f"space[{key!r}]: no model in {models} has this parameter, and it is no config field "
                     "(see `python -m imdb_ray models`)")
        base = {k: v[0] for k, v in values.items()}
        for model in models:
            for key, options in values.items():
                for option in options:
                    sample = {**base, "model": model, key: option}
                    try:
                        TrialConfig.from_flat(sample, strict=False)
                    except UserError as e:
                        fail(f"space[{key!r}] value {option!r}: {e}")
        return self

    def trial_resources(self) -> dict[str, float]:
        """What one trial holds. In ray_train mode the Tune function itself only needs a sliver of
        CPU: the workers' resources are claimed by Ray Train's own placement group."""
        if self.trainer == "direct":
            return {"CPU": self.cpus_per_worker, "GPU": self.gpus_per_worker}
        return {"CPU": 0.01}

    def devices_per_trial(self) -> tuple[str, float]:
        """The devices a trial's cost is counted in: its GPUs if it has any, else its CPUs."""
        if self.gpus_per_worker > 0:
            return "GPU", self.workers_per_trial * self.gpus_per_worker
        return "CPU", self.workers_per_trial * self.cpus_per_worker

    def concurrency(self, cluster: dict[str, float]) -> int:
        """Trials that fit at once, counting the Train workers, so workers never starve behind
        Tune functions holding the CPUs (the 2-CPU deadlock)."""
        cpu_per_trial = self.workers_per_trial * self.cpus_per_worker + (0.01 if self.trainer == "ray_train" else 0)
        fits = math.floor(cluster.get("CPU", 1) / cpu_per_trial + 1e-9)
        gpu = self.workers_per_trial * self.gpus_per_worker
        if gpu > 0:
            fits = min(fits, math.floor(cluster.get("GPU", 0) / gpu + 1e-9))
        if fits < 1:
            raise UserError(f"{self.source or self.name}: one trial needs {cpu_per_trial:g} CPU and {gpu:g} GPU; "
                            f"the cluster has {cluster.get('CPU', 0):g} CPU and {cluster.get('GPU', 0):g} GPU")
        limit = self.max_concurrent or fits
        return max(1, min(fits, limit, self.num_samples * max(1, _grid_size(self.space))))


def _is_grid(value) -> bool:
    return isinstance(value, dict) and set(value) == {"grid_search"}


def _grid_size(space: dict) -> int:
    n = 1
    for v in space.values():
        if _is_grid(v):
            n *= len(v["grid_search"])
    return n


def _candidates(key: str, value, fail) -> list:
    """Representative values of one space entry: every category, a numeric range's two ends."""
    from ray.tune.search.sample import Categorical, Domain, Float, Integer

    if _is_grid(value):
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


def load_sweep(path: str | Path) -> Sweep:
    """Run the sweep file (it is Python: only run files you trust) and validate its `sweep`."""
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
    sweep.source = path.resolve()
    return sweep.validate()


# --------------------------------------------------------------------------------- trials
def _train_worker(config: dict) -> None:
    """Runs in every Ray Train worker: the same loop, reporting to Train (and so to Tune)."""
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    from imdb_ray.train import train

    cfg = TrialConfig(**config)
    ctx = ray.train.get_context()
    resume = ray.train.get_checkpoint()

    group = ray.util.get_current_placement_group()  # the worker group's, for ReleaseTrainPlacementGroups

    def report(metrics: dict, ckpt_dir: str | None) -> None:
        ckpt = Checkpoint.from_directory(ckpt_dir) if ckpt_dir and ctx.get_world_rank() == 0 else None
        ray.train.report({**metrics, "node_id": ray.get_runtime_context().get_node_id(),
                          "train_placement_group": group.id.hex() if group else ""}, checkpoint=ckpt)

    with (resume.as_directory() if resume else nullcontext()) as resume_dir:
        train(cfg, on_epoch=report, resume_from=resume_dir, progress=False,
              wrap_model=ray.train.torch.prepare_model if ctx.get_world_size() > 1 else None,
              wrap_loader=ray.train.torch.prepare_data_loader if ctx.get_world_size() > 1 else None)


class ReleaseTrainPlacementGroups(Callback):
    """When Tune stops a trial whose Ray Train run is still going (ASHA's early stop, a retry),
    Ray 2.60 leaves that run's worker placement group reserved: its CPUs/GPUs stay taken for the
    rest of the sweep and later trials wait for workers forever. Each trial reports its group;
    when the trial ends or restarts, the group is removed (a no-op if Train already did)."""

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


def scaling_config(sweep: Sweep):
    """Ray Train's resources for one trial: workers_per_trial workers, each with its CPU/GPU share."""
    import ray.train

    gpus = sweep.gpus_per_worker
    return ray.train.ScalingConfig(num_workers=sweep.workers_per_trial, use_gpu=gpus > 0,
                                   resources_per_worker={"CPU": sweep.cpus_per_worker, **({"GPU": gpus} if gpus else {})})


def make_trial(sweep: Sweep, storage: str):
    """The Tune function trainable for this sweep."""
    trainer, gpus, max_failures = sweep.trainer, sweep.gpus_per_worker, sweep.max_failures
    scaling = scaling_config(sweep) if trainer == "ray_train" else None

    def trial(config: dict) -> None:
        from ray import tune

        cfg = TrialConfig.from_flat(config, strict=False)
        if trainer == "direct":
            import ray

            from imdb_ray.train import train

            def report(metrics: dict, ckpt_dir: str | None) -> None:
                metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}  # placement, for the record
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)

            resume = tune.get_checkpoint()
            with (resume.as_directory() if resume else nullcontext()) as resume_dir:
                train(cfg, on_epoch=report, resume_from=resume_dir, progress=False)
            return

        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        context = tune.get_context()
        TorchTrainer(
            _train_worker,
            train_loop_config=cfg.to_dict(),
            torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
            scaling_config=scaling,
            run_config=ray.train.RunConfig(
                name=f"{context.get_experiment_name()}-{context.get_trial_id()}", storage_path=storage,
                callbacks=[TuneReportCallback()], failure_config=ray.train.FailureConfig(max_failures=max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)),
        ).fit()

    return trial


# --------------------------------------------------------------------------------- the run
def prepare_shared_data(sweep: Sweep) -> list[str]:
    """Tokenise (and train Word2Vec) once, before any trial, for every data setting the space can
    produce from fixed/categorical values; trials then hit the cache (locked, so never twice)."""
    from ray.tune.search.sample import Domain

    from imdb_ray.text import prepare_hf_data, prepare_word_data
    from imdb_ray.train import load_trial_data

    data_keys = ("data", "text_column", "label_column", "n_train", "n_test", "val_fraction", "clean_html", "seed",
                 "max_len", "truncation", "min_freq", "max_vocab", "embeddings", "embed_dim", "w2v_algorithm",
                 "w2v_window", "w2v_min_count", "w2v_epochs", "cache_dir", "workers", "model", "checkpoint")
    if any(isinstance(sweep.space.get(k), Domain) and not hasattr(sweep.space[k], "categories") for k in data_keys):
        return []  # continuous data settings: trials build on demand, still once per key
    combos = [{}]
    for key in data_keys:
        if key in sweep.space:
            value = sweep.space[key]
            options = value["grid_search"] if _is_grid(value) else getattr(value, "categories", [value])
            combos = [{**c, key: o} for c in combos for o in options]
    done = set()
    for combo in combos:
        cfg = TrialConfig.from_flat(combo, strict=False)
        if cfg.family == "baseline":
            continue
        dataset = load_trial_data(cfg)
        if cfg.family == "hf":
            prepare_hf_data(cfg, dataset, cfg.resolved_model_args()["checkpoint"])
        else:
            prepare_word_data(cfg, dataset)
        done.add(dataset.fingerprint())
    return sorted(done)


def absolute_space(space: dict, cache_dir: str) -> dict:
    """Pin relative paths in the space (Tune changes each trial's working directory)."""
    space = dict(space)
    space.setdefault("cache_dir", cache_dir)
    for key in ("cache_dir", "data", "embeddings"):
        value = space.get(key)
        if isinstance(value, str) and value not in ("word2vec", "random") and (key == "cache_dir" or Path(value.split(",")[0]).exists()):
            space[key] = ",".join(str(Path(p.strip()).resolve()) for p in value.split(","))
    return space


def build_tuner(sweep: Sweep, storage: str, concurrency: int, callbacks: list, resume: bool):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    trainable = tune.with_resources(make_trial(sweep, storage), sweep.trial_resources())
    experiment_path = f"{storage.rstrip('/')}/{sweep.name}"
    if resume:
        return tune.Tuner.restore(experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=True)

    epochs = sweep.space.get("epochs", TrialConfig.epochs)
    max_t = max(_candidates("epochs", epochs, lambda m: None)) if not isinstance(epochs, int) else epochs
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=sweep.grace_period,
                               reduction_factor=sweep.reduction_factor)
                 if sweep.scheduler == "asha" else FIFOScheduler())
    if sweep.search == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(sampler=TPESampler(seed=sweep.seed))
    else:
        search = BasicVariantGenerator(random_state=sweep.seed, max_concurrent=concurrency)
    return tune.Tuner(
        trainable,
        param_space=sweep.space,
        tune_config=tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, search_alg=search, scheduler=scheduler,
                                    num_samples=sweep.num_samples, max_concurrent_trials=concurrency,
                                    time_budget_s=sweep.time_budget_s),
        run_config=tune.RunConfig(name=sweep.name, storage_path=storage, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=1),
    )


def best_checkpoint(result):
    """The best trial's last checkpoint (it holds the best epoch's weights), local or remote."""
    from ray.tune import Checkpoint

    if result.checkpoint is not None:
        return result.checkpoint
    path = result.metrics.get("checkpoint_path")  # ray_train mode: Train's own checkpoint
    return Checkpoint(path) if path else None


def best_value(result, sweep: Sweep) -> float:
    """A trial's best epoch (the weights it keeps), not its last one."""
    values = result.metrics_dataframe[sweep.metric]
    return float(values.max() if sweep.mode == "max" else values.min())


def leaderboard(results, sweep: Sweep, top: int = 5) -> list[dict]:
    rows = []
    for r in results:
        if r.metrics is None or sweep.metric not in (r.metrics or {}):
            from imdb_ray.tracking import error_summary

            rows.append({"trial": r.path.rsplit("/", 1)[-1] if r.path else "?", "status": "failed",
                         "error": error_summary(r.error) if r.error else "no result reported"})
            continue
        cfg = TrialConfig.from_flat(r.config, strict=False)
        searched = [k for k, v in sweep.space.items() if k != "model" and not isinstance(v, (int, float, str, bool, type(None)))]
        applied = {**cfg.to_dict(), **cfg.model_args}
        varied = {k: r.config[k] for k in searched if k in applied}
        rows.append({"trial": r.metrics.get("trial_id", "?"), "model": cfg.model, "params": varied,
                     sweep.metric: best_value(r, sweep), "epochs": r.metrics.get("training_iteration"),
                     "status": "ok"})
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r[sweep.metric], reverse=sweep.mode == "max")
    return ok[:top] + [r for r in rows if r["status"] != "ok"]


def run_sweep(sweep: Sweep, *, address: str | None, storage: str, tracking_uri: str, resume: bool = False,
              num_samples: int | None = None, max_concurrent: int | None = None, cache_dir: str = ".cache/imdb_ray",
              dashboard: bool = False, command: str = "") -> dict:
    """Validate, prepare shared data, run the trials, evaluate the best on test; returns a summary."""
    import ray

    from imdb_ray import tracking

    if num_samples is not None:
        sweep.num_samples = num_samples
    if max_concurrent is not None:
        sweep.max_concurrent = max_concurrent
    storage = _absolute_storage(storage)
    sweep.space = absolute_space(sweep.space, str(Path(cache_dir).resolve()))
    sweep.validate()
    if not address:  # a local Ray gets this machine's resources: refuse what can never fit, now
        sweep.concurrency(local_resources())
    tracking.check_reachable(tracking_uri)

    experiment_path = f"{storage.rstrip('/')}/{sweep.name}"
    parent_id = None
    if resume:
        from ray import tune

        parent_id = tracking.find_parent_run(tracking_uri, sweep.name, experiment_path)
        if parent_id is None or not tune.Tuner.can_restore(experiment_path):
            raise UserError(f"--resume: no interrupted sweep '{sweep.name}' under {storage}; run without --resume")
    print(f"[imdb_ray] preparing shared data for '{sweep.name}' ...", flush=True)
    start = time.perf_counter()
    prepared = prepare_shared_data(sweep)
    print(f"[imdb_ray] shared data ready ({len(prepared)} setting(s), {time.perf_counter() - start:.1f}s)", flush=True)

    if address:
        ray.init(address=address)
    else:
        local = local_resources()
        # The dashboard (off by default: it costs a core's worth on a laptop) never leaves localhost.
        ray.init(num_cpus=int(local["CPU"]), num_gpus=int(local["GPU"]), dashboard_host="127.0.0.1",
                 include_dashboard=dashboard, log_to_driver=False)
    try:
        concurrency = sweep.concurrency(ray.cluster_resources())
        settings = {k: v for k, v in dataclasses.asdict(sweep).items() if k not in ("space", "source")}
        parent = tracking.start_parent_run(tracking_uri, sweep.name, sweep.source, {**settings, "concurrency": concurrency},
                                           experiment_path, run_id=parent_id, command=command)
        print(f"[imdb_ray] {sweep.num_samples} sample(s), up to {concurrency} at once, trainer={sweep.trainer}; "
              f"MLflow parent run {parent} in {tracking_uri}", flush=True)
        callback = tracking.trial_callback(tracking_uri, sweep.name, parent, sweep.devices_per_trial())
        callbacks = [callback] + ([ReleaseTrainPlacementGroups()] if sweep.trainer == "ray_train" else [])
        tuner = build_tuner(sweep, storage, concurrency, callbacks, resume)
        results = tuner.fit()
        summary = {"parent_run_id": parent, "trials": len(results), "errors": results.num_errors,
                   "leaderboard": leaderboard(results, sweep), "experiment_path": experiment_path,
                   "cut_short": list(callback.cut_short)}
        summary.update(evaluate_on_test(sweep, results, experiment_path, tracking_uri, parent, log=False))
        unwritten = callback.finish()
        try:
            _log_tested(tracking_uri, sweep.name, parent, summary.pop("tested"))
            tracking.close_orphaned_runs(tracking_uri, sweep.name, parent, {r.metrics.get("trial_id") for r in results})
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri).set_terminated(parent, "FINISHED")
        except Exception as e:  # the store went away at the very end: say where everything is
            unwritten += 1
            print(f"[imdb_ray] warning: MLflow {tracking_uri}: {type(e).__name__} while closing the sweep", flush=True)
        summary["mlflow_unwritten"] = unwritten
        return summary
    finally:
        ray.shutdown()


def select_for_test(results, sweep: Sweep) -> list:
    """The top `test_top` trials by validation, then the best of each `test_each` value not among them."""
    ranked = sorted((r for r in results if r.metrics and sweep.metric in r.metrics and r.metrics_dataframe is not None),
                    key=lambda r: best_value(r, sweep), reverse=sweep.mode == "max")
    chosen = ranked[:sweep.test_top]
    if sweep.test_each:
        seen = {r.config.get(sweep.test_each) for r in chosen}
        for r in ranked[sweep.test_top:]:
            if r.config.get(sweep.test_each) not in seen:
                seen.add(r.config.get(sweep.test_each))
                chosen.append(r)
    return chosen


def evaluate_on_test(sweep: Sweep, results, experiment_path: str, tracking_uri: str, parent: str, log: bool = True,
                skip: set | None = None) -> dict:
    """Evaluate the selected trials once each on test (reported, never used to choose). Files go next
    to Ray's results first; `log` also writes them to MLflow (else the caller does, in "tested")."""
    from imdb_ray.train import evaluate_checkpoint

    chosen = select_for_test(results, sweep)
    results_dir = Path(experiment_path) if "://" not in experiment_path else Path("ray_results") / sweep.name
    summary: dict = {"tested": []}
    for rank, result in enumerate(chosen):
        cfg = TrialConfig.from_flat(result.config, strict=False)
        trial_id = result.metrics.get("trial_id")
        if skip and trial_id in skip:
            continue
        print(f"[imdb_ray] test evaluation {rank + 1}/{len(chosen)}: {cfg.model} ({trial_id})", flush=True)
        ckpt = best_checkpoint(result)
        with (ckpt.as_directory() if ckpt else nullcontext()) as ckpt_dir:
            evaluation = evaluate_checkpoint(cfg, ckpt_dir)
        folder = results_dir / ("best_trial" if rank == 0 else f"tested/{trial_id}")
        files = _save_tested(folder, cfg, evaluation, with_model=rank == 0)
        summary["tested"].append((trial_id, evaluation.metrics, files, rank == 0))
        if rank == 0:
            summary.update(best_config=cfg.to_dict(), best_val=best_value(result, sweep), test=evaluation.metrics,
                           best_files=files)
    if log:
        _log_tested(tracking_uri, sweep.name, parent, summary["tested"])
    return summary


def evaluate_finished_sweep(sweep: Sweep, storage: str, tracking_uri: str) -> dict:
    """`sweep FILE --test-only`: evaluate a finished sweep's selected trials that have no test result
    yet (after raising test_top or adding test_each); runs no trial and starts no Ray."""
    from mlflow.tracking import MlflowClient
    from ray import tune
    from ray.tune import ExperimentAnalysis, ResultGrid

    from imdb_ray import tracking

    experiment_path = f"{_absolute_storage(storage).rstrip('/')}/{sweep.name}"
    tracking.check_reachable(tracking_uri)
    parent = tracking.find_parent_run(tracking_uri, sweep.name, experiment_path)
    if parent is None or not tune.Tuner.can_restore(experiment_path):
        raise UserError(f"--test-only: no sweep '{sweep.name}' under {storage} with an MLflow parent run in {tracking_uri}")
    results = ResultGrid(ExperimentAnalysis(experiment_path))
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(sweep.name)
    done = {r.data.tags.get("trial_id") for r in client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'", max_results=5000) if "test_accuracy" in r.data.metrics}
    summary = evaluate_on_test(sweep, results, experiment_path, tracking_uri, parent, skip=done)
    return {**summary, "already_tested": len(done), "parent_run_id": parent}


def local_resources() -> dict[str, float]:
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def _save_tested(folder: Path, cfg: TrialConfig, evaluation, with_model: bool) -> dict[str, str]:
    """A tested trial's per-review test predictions (for bootstrap intervals) and, for the best, its
    model bundle: on disk next to Ray's results first, so nothing depends on the tracking store."""
    import csv

    from imdb_ray.bundle import save_bundle

    folder.mkdir(parents=True, exist_ok=True)
    files = {"predictions": str(folder / "test_predictions.csv")}
    with open(files["predictions"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "prob_positive"])
        writer.writerows((i, int(y), f"{p:.6f}") for i, (y, p) in enumerate(zip(evaluation.labels, evaluation.probs)))
    if with_model and cfg.family != "baseline":
        files["model"] = str(save_bundle(evaluation.model, cfg, folder / "model", evaluation.vocab))
    return files


def _log_tested(uri: str, experiment: str, parent: str, tested: list[tuple[str, dict, dict, bool]]) -> None:
    """Test metrics and predictions to each tested trial's run; the best's also to the parent, with its model."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    for trial_id, test, files, is_best in tested:
        if is_best:
            for k, v in test.items():
                client.log_metric(parent, f"best_{k}", v)
        runs = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}' and tags.trial_id = '{trial_id}'")
        for run in runs[:1]:
            run_id = run.info.run_id
            for k, v in test.items():
                client.log_metric(run_id, k, v)
            client.log_artifact(run_id, files["predictions"])
            if "model" in files:
                client.log_artifacts(run_id, files["model"], "model")
            if is_best:
                client.set_tag(run_id, "best_trial", "true")


def _absolute_storage(storage: str) -> str:
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def describe(value) -> str:
    from ray.tune.search.sample import Categorical, Float, Integer

    if _is_grid(value):
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
