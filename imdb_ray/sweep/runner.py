"""A validated Sweep -> a Ray Tune run. Each trial (sweep/trial.py) runs the one training loop, either in the Tune
trial process itself (`trainer="direct"`, cheap) or inside Ray Train workers (`trainer="ray_train"`, DDP-ready, seconds
more fixed cost per trial: results/sweep_overhead.md); the default "auto" is resolved by the spec to direct for one
worker per trial, ray_train for several. After the search the selected trials are evaluated on test
(sweep/evaluate.py) and everything is closed in MLflow (tracking/).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from concurrent.futures import Future, ThreadPoolExecutor, wait
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import ray
from ray import tune
from ray.tune.search.sample import Domain

from imdb_ray.config import TrialConfig
from imdb_ray.errors import UserError
from imdb_ray.interrupts import stops_held
from imdb_ray.sweep.callbacks import ConsoleProgress, EndStoppedTrainRuns, GrowGpuShareOnOOM, MLflowTrialRuns
from imdb_ray.sweep.cluster import check_cluster_reachable
from imdb_ray.sweep.evaluate import SweepSummary, configuration_error, confirm_configs, crown_best_confirmed, evaluate_on_test, leaderboard
from imdb_ray.sweep.ray_compat import fit_noticing_interrupt, ray_init_leaving_sigterm_alone, shutdown_ray
from imdb_ray.sweep.ray_watch import close_without_ray, watching_local_ray
from imdb_ray.sweep.search import GridSearch, SweepSearch, optuna_storage
from imdb_ray.sweep.space import DefineByRun, grid_configs, is_conditional, is_grid
from imdb_ray.sweep.spec import Sweep, absolute_storage
from imdb_ray.sweep.trial import make_trial
from imdb_ray.tracking import SweepRuns, TrialLog, check_reachable, creates_store, opens_slowly, warm_model_logging

if TYPE_CHECKING:
    from ray.tune import ResultGrid
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher


# --------------------------------------------------------------------------------- before the run
DATA_KEYS = ("data", "text_column", "label_column", "n_train", "n_test", "val_fraction", "clean_html", "seed",
             "val_split", "group_column", "split_seed", "max_len", "truncation", "min_freq", "max_vocab", "embeddings", "embed_dim", "w2v_algorithm",
             "w2v_window", "w2v_min_count", "w2v_epochs", "cache_dir", "w2v_workers", "model", "checkpoint")


def prepare_shared_data(sweep: Sweep) -> list[str]:
    """Tokenise (and train Word2Vec) once, before any trial, for every data setting each model's
    branch can produce from fixed/categorical values; trials then hit the cache (locked, so never twice)."""
    from imdb_ray.train import load_trial_data

    done = set()
    for model, branch in sweep.branches().items():
        if any(isinstance(branch.get(k), Domain) and not hasattr(branch[k], "categories") for k in DATA_KEYS):
            continue  # continuous data settings: trials build on demand, still once per key
        combos = [{"model": model}]
        for key in (k for k in DATA_KEYS if k in branch):
            value = branch[key]
            options = value["grid_search"] if is_grid(value) else getattr(value, "categories", [value])
            combos = [{**c, key: o} for c in combos for o in options]
        for combo in combos:
            cfg = TrialConfig.from_flat(combo, strict=False)
            if cfg.family.neural:
                cfg.family.check(cfg)  # before the data cache is written
                dataset = load_trial_data(cfg)
                cfg.family.prepare(cfg, dataset)
                done.add(dataset.fingerprint())
    return sorted(done)


def absolute_space(space: dict, cache_dir: str | None) -> dict:
    """Pin relative paths in the space and in each model's branch (Tune changes each trial's
    working directory): the cache, and data, vectors and checkpoint folders that exist here (a hub name stays)."""
    space = {"cache_dir": cache_dir, **space} if cache_dir else dict(space)
    for key in ("cache_dir", "data", "embeddings", "checkpoint"):
        value = space.get(key)
        if isinstance(value, str) and value not in ("word2vec", "random") and (key == "cache_dir" or Path(value.split(",")[0]).exists()):
            space[key] = ",".join(str(Path(p.strip()).resolve()) for p in value.split(","))
    if is_conditional(space):
        space["model"] = {m: absolute_space(branch, None) for m, branch in space["model"].items()}
    return space


def local_resources() -> dict[str, float]:
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def packing_callbacks(sweep: Sweep) -> list:
    """With trials packed several to a GPU: one that runs out of GPU memory is retried with a larger share."""
    if not 0 < sweep.gpus_per_worker < 1:
        return []
    return [GrowGpuShareOnOOM(sweep.gpus_per_worker, sweep.cpus_per_worker, direct=sweep.trainer == "direct")]


def build_search(sweep: Sweep, concurrency: int, study: tuple[Path, str] | None = None) -> Searcher:
    """The sweep's searcher over its branches (sweep/search.py). `study`: the sqlite file and study
    name that keep Optuna's history (None: in memory)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group=True
    metric = sweep.selection.best_key  # what selection ranks on: the best epoch so far, not the last
    tree = sweep.branches()
    if sweep.search == "grid":
        return GridSearch(grid_configs(tree, sweep.num_samples, sweep.seed), metric=metric, mode=sweep.mode)
    if sweep.search == "optuna":  # multivariate TPE over each model's own parameters; constant_liar for parallel trials
        sampler = optuna.samplers.TPESampler(seed=sweep.seed, multivariate=True, group=True, constant_liar=concurrency > 1,
                                             n_startup_trials=sweep.startup_trials)
    else:
        sampler = optuna.samplers.RandomSampler(seed=sweep.seed)
    storage = optuna_storage(study[0]) if study else None
    return SweepSearch(DefineByRun(tree), metric=metric, mode=sweep.mode, sampler=sampler, storage=storage,
                       study_name=study[1] if study else None)


def build_scheduler(sweep: Sweep) -> TrialScheduler:
    """ASHA on epochs (it stops a trial only at rungs, on the running best), one set of rungs for all trials or
    one per model, one-pass models (no epochs) outside them; or FIFO (every trial runs out)."""
    import numpy as np
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from imdb_ray.sweep.schedulers import GroupedASHA

    if sweep.scheduler == "fifo":
        return FIFOScheduler()
    if sweep.brackets > 1:  # ASHA assigns a trial its bracket with numpy's global generator
        np.random.seed(sweep.seed)
    # time_attr is the loop's own epoch, not Tune's training_iteration: a ray_train trial resumed after
    # its driver died starts Tune's count again at 1 while its Train checkpoint goes on from its epoch.
    asha = dict(time_attr="epoch", max_t=sweep.max_epochs(), grace_period=sweep.grace_period,
                reduction_factor=sweep.reduction_factor, brackets=sweep.brackets)
    one_pass = frozenset(sweep.one_pass_models())
    if sweep.rungs_per_model or one_pass:
        return GroupedASHA(per_model=sweep.rungs_per_model, one_pass=one_pass, **asha)
    return ASHAScheduler(**asha)


def build_tuner(sweep: Sweep, storage: str, concurrency: int, callbacks: list, resume: bool,
                study: tuple[Path, str] | None = None, verbose: int = 0, confirm: list[dict] | None = None) -> tune.Tuner:
    """The search's Tuner, or with `confirm` (configs from confirm_configs) the confirmation stage's:
    those configs in order, each run to its end, in an experiment of its own beside the search's."""
    trainable = tune.with_resources(make_trial(sweep, storage), sweep.trial_resources())
    path = sweep.experiment_path(storage, "confirm" if confirm else "")
    if resume and (not confirm or tune.Tuner.can_restore(path)):  # searcher, scheduler and trials come back
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    metric = sweep.selection.best_key
    search = GridSearch(confirm, metric=metric, mode=sweep.mode) if confirm else build_search(sweep, concurrency, study)
    # reuse_actors: a trial's process serves the next trial (same results: each trial seeds itself), so a short
    # trial does not pay for starting Python, torch and imdb_ray again (direct smoke sweep: 60 s -> 45 s). A ray_train
    # trial stopped early would leave its Train run's workers going: EndStoppedTrainRuns ends them, and its controller
    # (in the trial's process) ends when Tune ends the trial's thread (ray_compat.run_controller_in_process).
    if sweep.trainer == "ray_train":
        callbacks = [*callbacks, EndStoppedTrainRuns()]
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(metric=metric, mode=sweep.mode, search_alg=search,
                                    scheduler=build_scheduler(sweep) if not confirm else None,
                                    num_samples=len(confirm) if confirm else sweep.trial_count(),
                                    max_concurrent_trials=concurrency, time_budget_s=None if confirm else sweep.time_budget_s,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=Path(path).name, storage_path=storage, callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=verbose),
    )


def run_confirmation(sweep: Sweep, results: ResultGrid, summary: SweepSummary, storage: str, concurrency: int,
                     search_log: TrialLog, resume: bool, verbose: bool) -> list:
    """The top configs of the search (confirm_configs) again with new seeds, as Ray trials of the same engine
    (resumable), each evaluated once on test: into `summary` (confirmed, errors, the crown); returns their results."""
    configs = confirm_configs(results, sweep)
    if not configs:
        print("[imdb_ray] confirmation: nothing to rerun (no trial of a seed-dependent model finished)", flush=True)
        return []
    print(f"[imdb_ray] confirmation: top {len(configs) // sweep.confirm_seeds} seed-dependent config(s) x "
          f"{sweep.confirm_seeds} new seed(s) = {len(configs)} trial(s); seed-independent models are confirmed by "
          "their own run", flush=True)
    log = TrialLog(search_log.uri, sweep.name, search_log.parent_id, sweep.devices_per_trial(), workers=sweep.workers_per_trial)
    callbacks = [MLflowTrialRuns(log, sweep.searched_keys()), ConsoleProgress.for_sweep(sweep, total=len(configs)),
                 *packing_callbacks(sweep)]
    reruns = fit(build_tuner(sweep, storage, concurrency, callbacks, resume, verbose=2 if verbose else 0, confirm=configs), log)
    summary.confirmed = evaluate_on_test(sweep, reruns, sweep.experiment_path(storage, "confirm"), every=True)
    summary.errors += reruns.num_errors
    crown_best_confirmed(summary.tested, summary.confirmed, sweep.mode == "max")
    summary.mlflow_unwritten += log.finish()
    return list(reruns)


# --------------------------------------------------------------------------------- the run
def run_sweep(sweep: Sweep, *, address: str | None, storage: str, tracking_uri: str, resume: bool = False,
              cache_dir: str = ".cache/imdb_ray", dashboard: bool = False, command: str = "",
              verbose: bool = False) -> SweepSummary:
    """Check what can be checked, prepare shared data, run the trials, evaluate the selected ones on
    test, close the sweep in MLflow. `sweep` comes validated from `load_sweep`."""
    storage, experiment_path = absolute_storage(storage), sweep.experiment_path(storage)
    sweep = dataclasses.replace(sweep, space=absolute_space(sweep.space, str(Path(cache_dir).resolve())))
    if not address:  # a local Ray gets this machine's resources: refuse what can never fit, now
        sweep.concurrency(local_resources())
    else:
        check_cluster_reachable(address)
    if resume:  # asked before the store: this refusal creates none
        check_resumable(sweep, storage)
    check_later = opens_slowly(tracking_uri) and not resume  # checked while Ray starts; a server is asked now
    if not check_later:
        check_reachable(tracking_uri)
    parent = SweepRuns(tracking_uri, sweep.name).parent(experiment_path) if resume else None
    if resume and parent is None:
        raise nothing_to_resume(sweep, storage)

    print(f"[imdb_ray] preparing shared data for '{sweep.name}' ...", flush=True)
    start = time.perf_counter()
    prepared = prepare_shared_data(sweep)
    print(f"[imdb_ray] shared data ready ({len(prepared)} setting(s), {time.perf_counter() - start:.1f}s)", flush=True)
    quiet_ray(verbose)
    print(f"[imdb_ray] starting Ray ({'joining ' + address if address else 'a local Ray on this machine'}) ...", flush=True)
    # the store opened while Ray starts (a new file only after joining a cluster: its resources may refuse the sweep)
    opening = None if address and creates_store(tracking_uri) else in_background(open_runs, tracking_uri, sweep.name, check_later)
    runs = parent_id = None
    with stops_held(), ray_init_leaving_sigterm_alone():  # a stop while Ray starts: once started (seconds), as ever
        _start_ray(address, dashboard, verbose)
    try:  # the watch: a local Ray that ends under the sweep (a group kill, OOM) would hang it 60 s, then abort it
        with watching_local_ray(lambda what_ended: close_without_ray(what_ended, storage, runs, parent_id)):
            # an unusable store: its one-line error, and Ray stopped (finally)
            runs = opening.result() if opening else SweepRuns(tracking_uri, sweep.name)
            concurrency = sweep.concurrency(ray.cluster_resources())
            settings = {k: v for k, v in dataclasses.asdict(sweep).items() if k not in ("space", "source")}
            parent_id = (runs.reopen_parent(parent.info.run_id) if parent else
                         runs.start_parent(sweep.source, {**settings, "concurrency": concurrency}, experiment_path, command))
            print(f"[imdb_ray] {sweep.num_samples} sample(s), up to {concurrency} at once, trainer={sweep.trainer}; "
                  f"MLflow parent run {parent_id} in {tracking_uri}", flush=True)
            mlflow_runs = MLflowTrialRuns(TrialLog(tracking_uri, sweep.name, parent_id, sweep.devices_per_trial(),
                                                        workers=sweep.workers_per_trial), sweep.searched_keys())
            callbacks = [mlflow_runs, ConsoleProgress.for_sweep(sweep), *packing_callbacks(sweep)]
            warming = in_background(warm_model_logging)  # while the trials run: the sweep's end logs the tested models
            study = study_location(sweep, storage, parent_id)
            if study:
                print(f"[imdb_ray] Optuna study '{study[1]}' in {study[0]}  (optuna-dashboard sqlite:///{study[0]})", flush=True)
            results = fit(build_tuner(sweep, storage, concurrency, callbacks, resume, study, verbose=2 if verbose else 0),
                          mlflow_runs.log)
            refuse_misconfigured(results, parent_id, mlflow_runs.log)
            summary = SweepSummary(parent_id, experiment_path, trials=len(results), errors=results.num_errors,
                                   leaderboard=leaderboard(results, sweep), cut_short=mlflow_runs.cut_short,
                                   tested=evaluate_on_test(sweep, results, experiment_path))
            everything = list(results)
            if sweep.confirm_top:
                everything += run_confirmation(sweep, results, summary, storage, concurrency, mlflow_runs.log, resume, verbose)
            summary.mlflow_unwritten += mlflow_runs.log.finish()
            closing = in_background(_close, runs, parent_id, summary.tested + summary.confirmed, everything, warming)  # beside Ray's stop
    except BaseException as e:  # stopped (Ctrl-C, SIGTERM: KILLED) or crashed (FAILED): the parent never stays RUNNING
        stopped = isinstance(e, KeyboardInterrupt)
        if parent_id:
            with contextlib.suppress(Exception):  # a store that is gone by now must not hide what happened
                runs.finish_parent(parent_id, status="KILLED" if stopped else "FAILED")  # --resume: RUNNING again
        if parent_id and stopped:  # Tune saved its state
            print(f"[imdb_ray] interrupted; the sweep's state is saved under {storage}: continue with the same command "
                  "plus --resume", flush=True)
        raise
    finally:
        shutdown_ray()
    summary.mlflow_unwritten += closing.result()
    return summary


def check_resumable(sweep: Sweep, storage: str) -> None:
    """--resume: Tune's saved state of the sweep is under `storage`, or a one-line error."""
    if not tune.Tuner.can_restore(sweep.experiment_path(absolute_storage(storage))):
        raise nothing_to_resume(sweep, storage)


def nothing_to_resume(sweep: Sweep, storage: str) -> UserError:
    return UserError(f"--resume: no interrupted sweep '{sweep.name}' under {storage}; run without --resume")


def open_runs(uri: str, experiment: str, check: bool) -> SweepRuns:
    """The sweep's MLflow store, opened (an existing sqlite file checked first when `check`; a new one created, with
    its tables): seconds of imports and SQL, done beside Ray's start."""
    if check:
        check_reachable(uri)
    return SweepRuns(uri, experiment)


def in_background(work: Callable[..., Any], *args: Any) -> Future:
    """work(*args) in a thread of its own, beside Ray's start or stop: those mostly wait on Ray's processes, while
    opening the MLflow store (imports, schema reads) and logging the tested models are CPU, so side by side they take
    less than the sum (results/store_check_overlap.md). The caller takes .result()."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="imdb_ray-beside-ray")
    try:
        return pool.submit(work, *args)
    finally:
        pool.shutdown(wait=False)


def fit(tuner: tune.Tuner, log: TrialLog) -> ResultGrid:
    """tuner.fit(); on Ctrl-C, what MLflow is owed is written and KeyboardInterrupt raised, so nothing is
    evaluated on a half-done sweep. Tune (2.60) ends fit() after Ctrl-C as if done, its state saved; its
    only trace is that it put back the SIGINT handler it had replaced, so one is set here to see that."""
    if threading.current_thread() is not threading.main_thread() or os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") != "0":
        return tuner.fit()  # Tune leaves SIGINT alone: Ctrl-C raises KeyboardInterrupt as usual

    results, interrupted = fit_noticing_interrupt(tuner.fit)
    if interrupted:
        log.finish()
        raise KeyboardInterrupt
    return results


def refuse_misconfigured(results: ResultGrid, parent_id: str, log: TrialLog) -> None:
    """The net under validation: a trial that failed on a user error (a configuration the checks before
    Ray missed) ends the sweep with that error's line, nothing evaluated and no champion crowned. What
    the other trials computed stays in MLflow (run_sweep marks the parent run FAILED) and in Ray's results."""
    error = configuration_error(results)
    if error is None:
        return
    log.finish()
    raise UserError(f"{error}; fix the sweep file (nothing was evaluated on test or registered; the trials' "
                    f"results are in MLflow parent run {parent_id})")


def study_location(sweep: Sweep, storage: str, parent_id: str) -> tuple[Path, str] | None:
    """The Optuna study's sqlite file beside the sweep's results, named by the sweep's MLflow parent
    run (a rerun starts a new study in the same file; --resume continues its own). None for grid
    search and remote storage (there the study travels in Tune's searcher checkpoint)."""
    if sweep.search == "grid" or "://" in storage:
        return None
    return Path(sweep.experiment_path(storage)) / "optuna.sqlite", f"{sweep.name}-{parent_id}"


def quiet_ray(verbose: bool) -> None:
    """Ray's per-trial tables and its repeated experiment-snapshot warnings, off unless -v."""
    import logging

    import optuna

    level = logging.INFO if verbose else logging.ERROR
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(level)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if not verbose:  # Tune's newer console output prints its banner even at verbose=0; the classic one does not
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


# A local Ray is one machine: Ray Train's preemption watcher (one more actor process per trial, for spot nodes being
# drained) has nothing to watch, and its controller's 2-s poll of the workers delays each trial's end by up to 2 s.
# Ray also starts a worker process per CPU when the driver connects, with no runtime_env; Tune gives its trial actors
# one (env vars, tune/execution/class_cache.py), so they never take those workers (a 1-trial sweep started 3
# processes with them, 1 without): they only compete with Ray's start for the cores, and on a big machine hold a
# process per core. results/sweep_overhead.md measures these against Ray's defaults side by side. A cluster keeps
# Ray's defaults (its nodes may be spot instances); set these variables there to change them.
LOCAL_RAY_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
LOCAL_RAY_ENV = {**LOCAL_RAY_TRAIN_ENV, "RAY_prestart_worker_first_driver": "0"}


def _start_ray(address: str | None, dashboard: bool, verbose: bool = False) -> None:
    import logging

    level = logging.INFO if verbose else logging.ERROR  # Ray's start-up notices, unless -v
    if address:
        try:
            ray.init(address=address, logging_level=level)
        except ConnectionError as e:  # it answered (check_cluster_reachable) but is not a Ray head
            raise UserError(f"--address {address}: {str(e).strip().splitlines()[0]}; is it the head's GCS port "
                            "(6379, or ray://HOST:10001)?") from None
        return
    local = local_resources()
    for key, value in LOCAL_RAY_ENV.items():  # before ray.init: its processes inherit the environment
        os.environ.setdefault(key, value)
    # address="local": a Ray of its own, even when another runs on this machine (plain ray.init()
    # would join that one). The dashboard (off by default: it costs a core's worth on a laptop)
    # never leaves localhost.
    ray.init(address="local", num_cpus=int(local["CPU"]), num_gpus=int(local["GPU"]), dashboard_host="127.0.0.1",
             include_dashboard=dashboard, log_to_driver=False, logging_level=level)


def _close(runs: SweepRuns, parent_id: str, tested: list, results, warming: Future) -> int:
    """Test results to MLflow, orphaned runs closed, the parent finished; 1 if the store is gone."""
    wait([warming])  # its caches filled (a warm-up that failed only leaves log_tested that work and its errors)
    try:
        runs.log_tested(parent_id, tested)
        runs.close_orphans(parent_id, {(r.metrics or {}).get("trial_id") for r in results})
        runs.finish_parent(parent_id)
        return 0
    except Exception as e:  # the store went away at the very end: the caller says where everything is
        print(f"[imdb_ray] warning: MLflow {runs.uri}: {type(e).__name__} while closing the sweep", flush=True)
        return 1
