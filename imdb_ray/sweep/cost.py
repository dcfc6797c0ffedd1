"""What `--dry-run` says a sweep will cost: each model's training speed measured here, on the
sweep's own settings (batch size, max_len, model sizes), over a few real batches; then trial-epochs
and device-hours for the whole sweep.

The trials are shared evenly between models; under ASHA each trial is counted with the epochs ASHA's own rule
gives that many trials arriving one after another (early trials meet empty rungs and go on); the confirmation
reruns run every epoch. Speeds are this machine's, with the torch threads a trial gets, an epoch's validation
pass included, measured after a warm-up epoch (the first batches pay for torch's one-time set-up), at both ends
of every searched value (a width of 64 and of 128 cost differently) and averaged; the slower end gives the range's
top, the cost of a search that keeps to the slow settings and reruns only the slowest model (TPE goes where the
scores are, whatever they cost). A GPU trains many times faster than this CPU. Added once: the shared data
preparation (measured on a slice, scaled to the sweep's rows), the sweep's fixed cost (Ray start, MLflow:
SWEEP_FIXED_S) and its trials' (TRIAL_FIXED_S), and the test evaluations the driver runs one after another after
each stage (each tested trial's validation and test rows at the inference speed measured beside its training speed).
The wall time places each stage's trials on the slots as Tune does, each in the first slot to free up (`stage_seconds`):
a stage lasts until its last trial ends, so slots that wait for it then count (models of unequal speed, fewer trials
left than slots), which the trial-seconds over the slots leave out.
"""
from __future__ import annotations

import contextlib
import dataclasses
import heapq
import logging
import tempfile
from dataclasses import dataclass
from typing import Iterator

from imdb_ray.config import TrialConfig
from imdb_ray.sweep.packing import measure_peak_bytes, packing_line
from imdb_ray.sweep.space import candidates
from imdb_ray.sweep.spec import Sweep

MEASURE_BATCHES = 6  # training steps per measured epoch (a first epoch of as many warms up and is not counted)
EVAL_BATCHES = 4  # test batches scored after the measured epochs: the inference speed of a test evaluation
BASELINE_ROWS = 2_000  # a scikit-learn baseline is timed fitting this many reviews, then scaled linearly
PREP_ROWS = 1_000  # the shared data preparation (split, tokens, word vectors) is timed on this many, then scaled
FULL_TRAIN_ROWS = FULL_TEST_ROWS = 25_000  # the official splits
# What a sweep command costs beyond training on this 2-core machine, from results/sweep_overhead.md (a sweep of 8
# trials against a plain process of the same 8): once per sweep (imports, Ray start, the MLflow parent run, the first
# trial's process, registration, Ray stop, and the benchmark's one test evaluation, ~0.5 s of 500 rows, which the
# estimate also counts among its test evaluations; the auto row) and per trial by trainer (a trial reuses the process
# of the one before; a ray_train trial also starts its Train workers and Train's sync actor), a per-trial figure
# measured below zero (noise around nothing to pay) counted as 0. (tests/test_benchmarks.py holds these to the file.)
SWEEP_FIXED_S = 7.9
TRIAL_FIXED_S = {"direct": 0.0, "ray_train": 4.67}
# The slow end is shown when it is this much above the mean: two timings of one config on a few batches differed by
# 16 % here (gru, 227 and 195 rows/s, one after the other), so a learning rate's two ends must not read as a range.
SLOW_END_SHOWN = 1.15
ASHA_SIMULATIONS = 200  # seeded orders of trials of random quality, for ASHA's expected epochs


@dataclass
class ModelCost:
    model: str
    trials: float  # the model's share of the sweep's trials
    epochs: float  # per trial, expected
    epoch_seconds: float | None  # one training epoch, measured; None when it could not be measured
    note: str = ""
    peak_bytes: int | None = None  # the GPU memory its measured batches reached (CUDA only)
    slowest_epoch_seconds: float | None = None  # at the slower end of its searched values (default: the mean)
    rerun: bool = False  # confirmation reruns: the mean of the model's ends, or the slowest model's slowest
    test_seconds: float | None = None  # one test evaluation of a trial (its validation and test rows), measured

    @property
    def device_seconds(self) -> float | None:
        return None if self.epoch_seconds is None else self.trials * self.epochs * self.epoch_seconds

    @property
    def slowest_device_seconds(self) -> float | None:
        """Its trials at the slowest measured settings: what a search that keeps to them costs."""
        slowest = self.slowest_epoch_seconds or self.epoch_seconds
        return None if slowest is None else self.trials * self.epochs * slowest


def measure_samples_per_second(cfg: TrialConfig, threads: int) -> tuple[float, float, int | None]:
    """Train `cfg` for two short epochs on a few batches of real reviews, with the torch threads a trial gets (a
    baseline: one fit on a slice, its data loading included), then score a few test batches; training rows per second
    of the second epoch, its validation pass included (the first epoch pays torch's one-time set-up); rows per second
    scored after training (the restored model on validation and test: what a test evaluation does); and on CUDA the
    peak GPU memory. A baseline's test evaluation refits it and scores both splits: counted at its training speed."""
    import time

    import torch

    from imdb_ray.train import load_trial_data, train

    neural = cfg.family.neural
    rows = int(cfg.batch_size * MEASURE_BATCHES / (1 - cfg.val_fraction)) + 2 if neural else BASELINE_ROWS
    ends: list[float] = []
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        with tempfile.TemporaryDirectory(prefix="imdb_ray_cost_") as cache:
            small = dataclasses.replace(cfg, n_train=rows, n_test=cfg.batch_size * EVAL_BATCHES if neural else 8,
                                        epochs=2 if neural else 1, patience=0, cache_dir=cache,
                                        embeddings="random" if cfg.embeddings == "word2vec" else cfg.embeddings)
            data = load_trial_data(small)
            results: list = []
            peak = measure_peak_bytes(lambda: results.append(
                train(small, dataset=data, progress=False, evaluate_test=neural,
                      on_epoch=lambda metrics, ckpt: ends.append(time.perf_counter()))))
            scoring = time.perf_counter() - ends[-1]  # restoring the best epoch, then validation and test scored
    finally:
        torch.set_num_threads(previous)
    if not neural:
        speed = rows * (1 - cfg.val_fraction) / results[0].seconds
        return speed, speed, peak
    return len(data.train) / (ends[1] - ends[0]), (len(data.val) + len(data.test)) / scoring, peak


def measure_preparation_seconds(cfg: TrialConfig) -> float:
    """The shared data preparation a sweep pays once (split, tokenising, word vectors), timed on PREP_ROWS
    training rows in a fresh cache and scaled to cfg's rows."""
    import time

    from imdb_ray.train import load_trial_data, make_loaders

    rows = cfg.n_train or FULL_TRAIN_ROWS
    with tempfile.TemporaryDirectory(prefix="imdb_ray_cost_") as cache:
        small = dataclasses.replace(cfg, n_train=min(rows, PREP_ROWS), n_test=8, cache_dir=cache)
        start = time.perf_counter()
        make_loaders(small, load_trial_data(small))
        return (time.perf_counter() - start) * rows / min(rows, PREP_ROWS)


def measure_speeds(configs: list[TrialConfig], threads: int) -> dict:
    """ModelCost's measured fields for one model's configs (its searched values' two ends): one training epoch
    (validation included) averaged over them and the slowest; one test evaluation (the trial's validation and test
    rows scored), averaged; the largest GPU peak among them. If the measurement fails: a note that says why."""
    try:
        measured = [measure_samples_per_second(c, threads) for c in configs]
    except Exception as e:  # noqa: BLE001 (a checkpoint not on this machine, no memory: say so, go on)
        return {"note": f"not measured here: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"}
    train_rows = [(c.n_train or FULL_TRAIN_ROWS) * (1 - c.val_fraction) for c in configs]
    scored_rows = [(c.n_train or FULL_TRAIN_ROWS) * c.val_fraction + (c.n_test or FULL_TEST_ROWS) for c in configs]
    seconds = [rows / speed for rows, (speed, _, _) in zip(train_rows, measured)]
    tests = [rows / speed for rows, (_, speed, _) in zip(scored_rows, measured)]
    peaks = [p for _, _, p in measured if p is not None]
    return {"epoch_seconds": sum(seconds) / len(seconds), "slowest_epoch_seconds": max(seconds),
            "test_seconds": sum(tests) / len(tests), "peak_bytes": max(peaks) if peaks else None}


def checkpoint_not_here(cfg: TrialConfig) -> str | None:
    """The Hugging Face checkpoint `cfg` would download, if any: offline, loading one retries the hub for ~20 s and
    fails, and online a dry run has no business fetching gigabytes, so such a model is reported, not measured."""
    checkpoint = cfg.resolved_model_args().get("checkpoint")
    if checkpoint is None:
        return None
    from imdb_ray.models.hf import available_offline

    return None if available_offline(checkpoint) else checkpoint


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """imdb_ray's progress records (INFO: cache builds, Word2Vec epochs) held back within the block."""
    logger = logging.getLogger("imdb_ray")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def estimate(sweep: Sweep) -> tuple[list[ModelCost], float]:
    """Each model's measured epoch time and its share of the sweep's trial-epochs; the shared preparation's
    seconds (measured for the first model: the models of a sweep usually share one)."""
    tree = sweep.branches()
    per_model = sweep.trial_count() / len(tree)
    costs, prepare, ran_by_epochs = [], None, {}
    ranked = max(1, len(tree) - len(sweep.one_pass_models()))  # one-pass models' trials stay outside the rungs
    rung_trials = per_model if sweep.rungs_per_model else per_model * ranked  # the trials meeting at a rung
    for number, (model, branch) in enumerate(tree.items(), 1):
        print(f"    {model} ({number} of {len(tree)}) ...", flush=True)  # seconds each: the progress of a dry run
        ends = [{k: candidates(k, v, sweep.fail)[i] for k, v in branch.items()} for i in (0, -1)]
        configs = [TrialConfig.from_flat({**e, "model": model}) for e in ends]
        configs = configs[:1] if configs[0] == configs[1] else configs
        epochs = max(candidates("epochs", branch.get("epochs", TrialConfig.epochs), sweep.fail))
        missing = next(filter(None, map(checkpoint_not_here, configs)), None)
        with quiet_progress():  # the measurement's cache and Word2Vec lines: a throwaway cache's, not the sweep's
            measured = {"note": f"not measured here: {missing} is not on this machine (a dry run downloads nothing; "
                                f"`hf download {missing}` first to measure it)"} if missing else \
                measure_speeds(configs, round(sweep.cpus_per_worker))
            if prepare is None and "epoch_seconds" in measured:
                prepare = measure_preparation_seconds(configs[0])
        if epochs not in ran_by_epochs:  # simulated once per epoch count, not once per model
            ran_by_epochs[epochs] = expected_epochs(sweep, epochs, rung_trials)
        ran = 1 if not configs[0].family.neural else ran_by_epochs[epochs]
        costs.append(ModelCost(model, per_model, ran, measured.pop("epoch_seconds", None), **measured))
    if sweep.confirm_top:  # the best configs again with new seeds, every epoch: counted at the models' mean speed,
        slowest = max((c.slowest_epoch_seconds or 0.0 for c in costs), default=0.0)  # or all of the slowest model's
        for c in list(costs):
            if c.epoch_seconds is not None and c.epochs > 1:
                top = max(candidates("epochs", tree[c.model].get("epochs", TrialConfig.epochs), sweep.fail))
                costs.append(ModelCost(f"{c.model} (confirm)", sweep.confirm_top * sweep.confirm_seeds / len(tree), top,
                                       c.epoch_seconds, slowest_epoch_seconds=slowest, rerun=True))
    return costs, prepare or 0.0


def expected_epochs(sweep: Sweep, epochs: int, trials: float) -> float:
    """Epochs a trial runs on average: all of them under FIFO; under ASHA, what its rule gives `trials` trials
    of random quality arriving one after another: at each rung (grace x rf^k below the last epoch) a trial goes
    on unless it is below the (1 - 1/rf) quantile of the trials recorded there so far, itself included."""
    import numpy as np

    if sweep.scheduler != "asha":
        return epochs
    rungs, rung = [], sweep.grace_period
    while rung < epochs:
        rungs.append(rung)
        rung *= sweep.reduction_factor
    rng, n, total = np.random.default_rng(0), max(1, round(trials)), 0
    for _ in range(ASHA_SIMULATIONS):
        recorded: dict[int, list[float]] = {r: [] for r in rungs}
        for quality in rng.random(n):
            ran = epochs
            for r in rungs:
                recorded[r].append(quality)
                if quality < np.percentile(recorded[r], (1 - 1 / sweep.reduction_factor) * 100):
                    ran = r
                    break
            total += ran
    return total / (ASHA_SIMULATIONS * n)


def cost_lines(sweep: Sweep, costs: list[ModelCost], prepare_seconds: float, concurrency: int | None,
               gpu_bytes: int | None = None) -> list[str]:
    """The estimate's lines; with `gpu_bytes` (this machine's GPU) and measured peaks, how many trials fit per GPU."""
    device, per_trial = sweep.devices_per_trial()
    lines = ["  cost, measured on this machine (each model's epoch with validation, warm; ASHA's expected stops):"]
    for c in costs:
        speed = f"{c.epoch_seconds:.1f}s/epoch" if c.epoch_seconds is not None else c.note
        if c.epoch_seconds and not c.rerun and (c.slowest_epoch_seconds or 0) > SLOW_END_SHOWN * c.epoch_seconds:
            speed += f" ({c.slowest_epoch_seconds:.1f}s at its slowest searched values)"
        lines.append(f"    {c.model:24s} ~{c.trials:.1f} trial(s) x {c.epochs:.2g} epoch(s)  {speed}")
    measured = [c.device_seconds for c in costs if c.device_seconds is not None]
    total = sum(measured)
    trial_epochs = sum(c.trials * c.epochs for c in costs)
    start, slots = TRIAL_FIXED_S[sweep.trainer], max(1, concurrency or 1)
    starts = start * sum(c.trials for c in costs) / slots  # shown for reading; the stages' walls count each trial's
    evaluations, tests = tested_count(sweep), [c.test_seconds for c in costs if c.test_seconds is not None]
    testing = evaluations * sum(tests) / len(tests) if tests else 0.0
    fixed = prepare_seconds + SWEEP_FIXED_S + testing
    walls = [sum(stage_seconds([c for c in costs if c.rerun == rerun], slots, start, slow)
                 for rerun in (False, True)) for slow in (False, True)]  # the search, then the confirmation reruns
    lines.append(f"    once: shared data preparation ~{prepare_seconds:.0f}s (measured on {PREP_ROWS:,} rows, scaled), "
                 f"Ray start and MLflow ~{SWEEP_FIXED_S:.0f}s, trial starts ({sweep.trainer}) ~{starts:.0f}s "
                 f"(results/sweep_overhead.md), test evaluation of ~{evaluations} trial(s) one after another ~{testing:.0f}s")
    slowest = sum(c.slowest_device_seconds for c in costs if c.slowest_device_seconds is not None)
    slow_fixed = fixed - testing + evaluations * max(tests, default=0.0)  # every tested trial of the slowest model
    cpu_for_gpu = device == "GPU" and not gpu_bytes  # a GPU sweep timed on this machine's CPU: no GPU-hours to give
    unit = "trial-hours at this machine's CPU speed" if cpu_for_gpu else f"{device}-hours"
    scale = 1 if cpu_for_gpu else per_trial  # trial seconds -> device seconds (devices a trial holds)
    line = (f"    total: {trial_epochs:.0f} trial-epochs, {total * scale / 3600:.2f} {unit}"
            + (f", ~{_hours(fixed + walls[0])} wall at {concurrency} trial(s) at once" if concurrency else ""))
    if slowest > total * SLOW_END_SHOWN:  # the searcher may keep to the slow end (TPE favours what scores well, not what is cheap)
        line += (f"; up to {slowest * scale / 3600:.2f} {unit}"
                 + (f", ~{_hours(slow_fixed + walls[1])} wall" if concurrency else "")
                 + " if every trial takes its model's slowest searched values and the reruns are all of the slowest model")
    if len(measured) < len(costs):
        line += " (models not measured are left out)"
    lines.append(line)
    if cpu_for_gpu and measured:
        lines.append("    the sweep asks for GPUs and this machine has none: its trials run faster there; `sweep FILE --dry-run` "
                     "on a GPU machine gives GPU-hours and how many trials fit on one GPU")
    peaks = [c.peak_bytes for c in costs if c.peak_bytes is not None]
    if peaks and gpu_bytes:
        lines.append(packing_line(max(peaks), gpu_bytes, sweep.gpus_per_worker))
    return lines


def stage_seconds(costs: list[ModelCost], slots: int, start: float = 0.0, slow: bool = False) -> float:
    """Wall seconds of one stage: its trials (the models' shares, rounded, taken in turn) each start in the first slot
    to free up, as Tune places them, and last their model's expected epochs at its mean (or, `slow`, its slowest)
    measured speed plus `start` seconds; the stage ends with its last trial. Models not measured are left out."""
    measured = [c for c in costs if c.epoch_seconds is not None]
    lengths = [c.epochs * ((c.slowest_epoch_seconds or c.epoch_seconds) if slow else c.epoch_seconds) + start
               for c in measured]
    free = [0.0] * slots  # when each slot is next free: a heap
    for trial in range(round(sum(c.trials for c in measured))):
        heapq.heapreplace(free, free[0] + lengths[trial % len(lengths)])
    return max(free)


def tested_count(sweep: Sweep) -> int:
    """Trials the driver evaluates on test (sweep/evaluate.py): the search's top by validation (as many as the
    largest of test_top, ensemble_top, confirm_top), the best of each `test_each` value, every confirmation rerun."""
    trials = sweep.trial_count()
    top = min(trials, max(sweep.test_top, sweep.ensemble_top, sweep.confirm_top))
    if sweep.test_each:
        key, values = sweep.test_each, set()
        for model, branch in sweep.branches().items():
            if key == "model" or key in branch:
                values |= {str(v) for v in ([model] if key == "model" else candidates(key, branch[key], sweep.fail))}
        top = min(trials, top + max(0, len(values) - 1))  # the best trial overall already covers one value
    return top + sweep.confirm_top * sweep.confirm_seeds


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{seconds / 60:.1f}m"
