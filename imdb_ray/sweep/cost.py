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
preparation (measured on a slice, scaled to the sweep's rows) and the sweep's fixed cost (Ray start, MLflow, test
evaluation: SWEEP_FIXED_S) and its trials' (TRIAL_FIXED_S).
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass

from imdb_ray.config import TrialConfig
from imdb_ray.sweep.packing import measure_peak_bytes, packing_line
from imdb_ray.sweep.space import candidates
from imdb_ray.sweep.spec import Sweep

MEASURE_BATCHES = 6  # training steps per measured epoch (a first epoch of as many warms up and is not counted)
BASELINE_ROWS = 2_000  # a scikit-learn baseline is timed fitting this many reviews, then scaled linearly
PREP_ROWS = 1_000  # the shared data preparation (split, tokens, word vectors) is timed on this many, then scaled
FULL_TRAIN_ROWS = 25_000  # the official train split
# What a sweep command costs beyond training on this 2-core machine, from results/sweep_overhead.md (a sweep of 8
# trials against a plain process of the same 8): once per sweep (imports, Ray start, the MLflow parent run, the first
# trial's process, test evaluation and registration, Ray stop; the auto row) and per trial by trainer (a direct trial
# reuses its process; a ray_train trial starts a Train controller, its workers and their helper actors).
SWEEP_FIXED_S = 11.1
TRIAL_FIXED_S = {"direct": 0.01, "ray_train": 11.8}
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

    @property
    def device_seconds(self) -> float | None:
        return None if self.epoch_seconds is None else self.trials * self.epochs * self.epoch_seconds

    @property
    def slowest_device_seconds(self) -> float | None:
        """Its trials at the slowest measured settings: what a search that keeps to them costs."""
        slowest = self.slowest_epoch_seconds or self.epoch_seconds
        return None if slowest is None else self.trials * self.epochs * slowest


def measure_samples_per_second(cfg: TrialConfig, threads: int) -> tuple[float, int | None]:
    """Train `cfg` for two short epochs on a few batches of real reviews, with the torch threads a trial gets (a
    baseline: one fit on a slice, its data loading included); training rows per second of the second epoch,
    its validation pass included (the first epoch pays torch's one-time set-up); and on CUDA the peak GPU memory."""
    import time

    import torch

    from imdb_ray.train import train

    rows = int(cfg.batch_size * MEASURE_BATCHES / (1 - cfg.val_fraction)) + 2 if cfg.family.neural else BASELINE_ROWS
    ends: list[float] = []
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        with tempfile.TemporaryDirectory(prefix="imdb_ray_cost_") as cache:
            small = dataclasses.replace(cfg, n_train=rows, n_test=8, epochs=2 if cfg.family.neural else 1, patience=0,
                                        cache_dir=cache, embeddings="random" if cfg.embeddings == "word2vec" else cfg.embeddings)
            results: list = []
            peak = measure_peak_bytes(lambda: results.append(
                train(small, progress=False, on_epoch=lambda metrics, ckpt: ends.append(time.perf_counter()))))
    finally:
        torch.set_num_threads(previous)
    if cfg.family.neural:
        return rows * (1 - cfg.val_fraction) / (ends[1] - ends[0]), peak
    return rows * (1 - cfg.val_fraction) / results[0].seconds, peak


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


def epoch_seconds(configs: list[TrialConfig], threads: int) -> tuple[float | None, float | None, str, int | None]:
    """One training epoch (validation included): averaged over `configs` and the slowest of them, and the largest
    GPU peak among them; or None and why it failed."""
    try:
        measured = [measure_samples_per_second(c, threads) for c in configs]
    except Exception as e:  # noqa: BLE001 (a checkpoint not on this machine, no memory: say so, go on)
        return None, None, f"not measured here: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}", None
    seconds = [(c.n_train or FULL_TRAIN_ROWS) * (1 - c.val_fraction) / speed for c, (speed, _) in zip(configs, measured)]
    peaks = [p for _, p in measured if p is not None]
    return sum(seconds) / len(seconds), max(seconds), "", max(peaks) if peaks else None


def checkpoint_not_here(cfg: TrialConfig) -> str | None:
    """The Hugging Face checkpoint `cfg` would download, if any: offline, loading one retries the hub for ~20 s and
    fails, and online a dry run has no business fetching gigabytes, so such a model is reported, not measured."""
    checkpoint = cfg.resolved_model_args().get("checkpoint")
    if checkpoint is None:
        return None
    from imdb_ray.models.hf import available_offline

    return None if available_offline(checkpoint) else checkpoint


def estimate(sweep: Sweep) -> tuple[list[ModelCost], float]:
    """Each model's measured epoch time and its share of the sweep's trial-epochs; the shared preparation's
    seconds (measured for the first model: the models of a sweep usually share one)."""
    tree = sweep.branches()
    per_model = sweep.trial_count() / len(tree)
    costs, prepare, ran_by_epochs = [], None, {}
    ranked = max(1, len(tree) - len(sweep.one_pass_models()))  # one-pass models' trials stay outside the rungs
    rung_trials = per_model if sweep.rungs_per_model else per_model * ranked  # the trials meeting at a rung
    for model, branch in tree.items():
        ends = [{k: candidates(k, v, sweep.fail)[i] for k, v in branch.items()} for i in (0, -1)]
        configs = [TrialConfig.from_flat({**e, "model": model}) for e in ends]
        configs = configs[:1] if configs[0] == configs[1] else configs
        epochs = max(candidates("epochs", branch.get("epochs", TrialConfig.epochs), sweep.fail))
        missing = next(filter(None, map(checkpoint_not_here, configs)), None)
        seconds, slowest, note, peak = (None, None, f"not measured here: {missing} is not on this machine (a dry run "
                                        f"downloads nothing; `hf download {missing}` first to measure it)", None) if missing else \
            epoch_seconds(configs, round(sweep.cpus_per_worker))
        prepare = measure_preparation_seconds(configs[0]) if prepare is None and seconds is not None else prepare
        if epochs not in ran_by_epochs:  # simulated once per epoch count, not once per model
            ran_by_epochs[epochs] = expected_epochs(sweep, epochs, rung_trials)
        ran = 1 if not configs[0].family.neural else ran_by_epochs[epochs]
        costs.append(ModelCost(model, per_model, ran, seconds, note, peak, slowest))
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
    starts = TRIAL_FIXED_S[sweep.trainer] * sum(c.trials for c in costs) / max(1, concurrency or 1)
    fixed = prepare_seconds + SWEEP_FIXED_S + starts
    lines.append(f"    once: shared data preparation ~{prepare_seconds:.0f}s (measured on {PREP_ROWS:,} rows, scaled), "
                 f"Ray start, MLflow and test evaluation ~{SWEEP_FIXED_S:.0f}s, trial starts ({sweep.trainer}) ~{starts:.0f}s "
                 "(results/sweep_overhead.md)")
    slowest = sum(c.slowest_device_seconds for c in costs if c.slowest_device_seconds is not None)
    line = (f"    total: {trial_epochs:.0f} trial-epochs, {total * per_trial / 3600:.2f} {device}-hours"
            + (f", ~{_hours(fixed + total / max(1, concurrency))} wall at {concurrency} trial(s) at once" if concurrency else ""))
    if slowest > total * SLOW_END_SHOWN:  # the searcher may keep to the slow end (TPE favours what scores well, not what is cheap)
        line += (f"; up to {slowest * per_trial / 3600:.2f} {device}-hours"
                 + (f", ~{_hours(fixed + slowest / max(1, concurrency))} wall" if concurrency else "")
                 + " if every trial takes its model's slowest searched values and the reruns are all of the slowest model")
    if len(measured) < len(costs):
        line += " (models not measured are left out)"
    lines.append(line)
    peaks = [c.peak_bytes for c in costs if c.peak_bytes is not None]
    if peaks and gpu_bytes:
        lines.append(packing_line(max(peaks), gpu_bytes, sweep.gpus_per_worker))
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{seconds / 60:.1f}m"
