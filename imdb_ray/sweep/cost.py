"""What `--dry-run` says a sweep will cost: each model's training speed measured here, on the
sweep's own settings (batch size, max_len, model sizes), over a few real batches; then trial-epochs
and device-hours for the whole sweep.

The trials are shared evenly between models; under ASHA each trial is counted with the epochs it runs when
1/reduction_factor of the trials go on at each rung; the confirmation reruns run every epoch. Speeds are
this machine's, with the torch threads a trial gets, an epoch's validation pass included, measured after a
warm-up epoch (the first batches pay for torch's one-time set-up); a GPU trains many times faster than this CPU.
Not counted: starting Ray and each trial's process, preparing the shared data, the test evaluation.
"""
from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass

from imdb_ray.config import TrialConfig
from imdb_ray.sweep.space import candidates
from imdb_ray.sweep.spec import Sweep

MEASURE_BATCHES = 6  # training steps per measured epoch (a first epoch of as many warms up and is not counted)
BASELINE_ROWS = 2_000  # a scikit-learn baseline is timed fitting this many reviews, then scaled linearly
FULL_TRAIN_ROWS = 25_000  # the official train split


@dataclass
class ModelCost:
    model: str
    trials: float  # the model's share of the sweep's trials
    epochs: float  # per trial, expected
    epoch_seconds: float | None  # one training epoch, measured; None when it could not be measured
    note: str = ""

    @property
    def device_seconds(self) -> float | None:
        return None if self.epoch_seconds is None else self.trials * self.epochs * self.epoch_seconds


def measure_samples_per_second(cfg: TrialConfig, threads: int) -> float:
    """Train `cfg` for two short epochs on a few batches of real reviews, with the torch threads a trial gets (a
    baseline: one fit on a slice, its data loading included); training rows per second of the second epoch,
    its validation pass included (the first epoch pays torch's one-time set-up)."""
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
            result = train(small, progress=False, on_epoch=lambda metrics, ckpt: ends.append(time.perf_counter()))
    finally:
        torch.set_num_threads(previous)
    if cfg.family.neural:
        return rows * (1 - cfg.val_fraction) / (ends[1] - ends[0])
    return rows * (1 - cfg.val_fraction) / result.seconds


def estimate(sweep: Sweep) -> list[ModelCost]:
    """Each model's measured epoch time and its share of the sweep's trial-epochs."""
    tree = sweep.branches()
    per_model = sweep.trial_count() / len(tree)
    costs = []
    for model, branch in tree.items():
        base = {k: candidates(k, v, sweep.fail)[0] for k, v in branch.items()}
        cfg = TrialConfig.from_flat({**base, "model": model})
        epochs = max(candidates("epochs", branch.get("epochs", TrialConfig.epochs), sweep.fail))
        rows = (cfg.n_train or FULL_TRAIN_ROWS) * (1 - cfg.val_fraction)
        try:
            seconds = rows / measure_samples_per_second(cfg, round(sweep.cpus_per_worker))
            note = ""
        except Exception as e:  # noqa: BLE001 (a checkpoint not on this machine, no memory: say so, go on)
            seconds, note = None, f"not measured here: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        costs.append(ModelCost(model, per_model, 1 if not cfg.family.neural else expected_epochs(sweep, epochs), seconds, note))
    if sweep.confirm_top:  # the best configs again with new seeds, every epoch: counted at the models' mean speed
        for c in list(costs):
            if c.epoch_seconds is not None and c.epochs > 1:
                top = max(candidates("epochs", tree[c.model].get("epochs", TrialConfig.epochs), sweep.fail))
                costs.append(ModelCost(f"{c.model} (confirm)", sweep.confirm_top * sweep.confirm_seeds / len(tree), top,
                                       c.epoch_seconds))
    return costs


def expected_epochs(sweep: Sweep, epochs: int) -> float:
    """Epochs a trial runs on average: all of them under FIFO; under ASHA, the grace period, then at each rung
    (grace x rf^k) 1/rf of the trials going on to the next."""
    if sweep.scheduler != "asha":
        return epochs
    total, rung, share = min(sweep.grace_period, epochs), sweep.grace_period, 1.0
    while rung < epochs:
        share /= sweep.reduction_factor
        following = min(rung * sweep.reduction_factor, epochs)
        total, rung = total + share * (following - rung), following
    return total


def cost_lines(sweep: Sweep, costs: list[ModelCost], concurrency: int | None) -> list[str]:
    device, per_trial = sweep.devices_per_trial()
    lines = ["  cost, measured on this machine (each model's epoch with validation, warm; ASHA's expected stops; no start-up):"]
    for c in costs:
        speed = f"{c.epoch_seconds:.1f}s/epoch" if c.epoch_seconds is not None else c.note
        lines.append(f"    {c.model:24s} ~{c.trials:.1f} trial(s) x {c.epochs:.2g} epoch(s)  {speed}")
    measured = [c.device_seconds for c in costs if c.device_seconds is not None]
    total = sum(measured)
    trial_epochs = sum(c.trials * c.epochs for c in costs)
    line = (f"    total: {trial_epochs:.0f} trial-epochs, {total * per_trial / 3600:.2f} {device}-hours"
            + (f", ~{_hours(total / max(1, concurrency))} wall at {concurrency} trial(s) at once" if concurrency else ""))
    if len(measured) < len(costs):
        line += " (models not measured are left out)"
    lines.append(line)
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h" if seconds >= 3600 else f"{seconds / 60:.0f}m"
