"""The one training loop. Local runs, direct Tune trials and Ray Train workers all call `train()`.

The host plugs in through keyword arguments only: `on_epoch(metrics, checkpoint_dir)` after every
epoch (Ray reporting lives there), `resume_from` a checkpoint folder, and for DDP `shard=(rank,
world_size)` with `wrap_model` / `wrap_loader` (Ray Train's preparation). Nothing here imports Ray.
"""
from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm.auto import tqdm

from imdb_ray.batching import LengthBuckets, SortedBatches
from imdb_ray.checkpoint import CHECKPOINT_FILE, Progress, epoch_checkpoint_folder, load_checkpoint, save_checkpoint
from imdb_ray.config import TrialConfig
from imdb_ray.data import Dataset, Split, load_dataset_cached
from imdb_ray.errors import UserError
from imdb_ray.metrics import METRICS
from imdb_ray.losses import build_loss
from imdb_ray.models import build_model, get_model, load_trainable_state

EpochCallback = Callable[[dict, "str | None"], None]
# The epoch's progress bar is redrawn at most this often: on a terminal; and where stderr is a file or pipe (a log,
# nohup, a batch job), whose every redraw is one more line of the bar in the log.
BAR_SECONDS, LOG_BAR_SECONDS = 0.1, 30.0


@dataclass
class TrainResult:
    config: TrialConfig
    history: list[dict] = field(default_factory=list)  # one metrics dict per epoch
    best_epoch: int = 0
    val: dict = field(default_factory=dict)  # metrics of the restored best epoch
    test: dict = field(default_factory=dict)  # filled only when evaluate_test=True
    model: object = None
    vocab: list[str] | None = None  # word models: the vocabulary the model's ids index
    seconds: float = 0.0


@dataclass
class Evaluation:
    """A restored model scored on validation and test: test metrics, and for each split one row per review
    (`row` in the source file, `label`, `prob_positive`) for intervals, paired tests and ensembles."""

    metrics: dict
    predictions: dict[str, pd.DataFrame]
    model: object = None
    vocab: list[str] | None = None


def prediction_table(split: Split, probs: np.ndarray) -> pd.DataFrame:
    rows = split.rows if split.rows is not None else np.arange(len(split))
    return pd.DataFrame({"row": rows, "label": split.labels, "prob_positive": np.asarray(probs, dtype=float)})


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    return torch.device(name)


# ------------------------------------------------------------------------------------- data
def load_trial_data(cfg: TrialConfig) -> Dataset:
    return load_dataset_cached(cfg.data, cfg.cache_dir, text_column=cfg.text_column, label_column=cfg.label_column,
                               val_fraction=cfg.val_fraction, n_train=cfg.n_train, n_test=cfg.n_test,
                               clean=cfg.clean_html, seed=cfg.split_seed, val_split=cfg.val_split,
                               group_column=cfg.group_column)


def make_loaders(cfg: TrialConfig, dataset: Dataset, shard: tuple[int, int] | None = None) -> tuple[dict[str, DataLoader], dict, list[str] | None]:
    """Loaders yielding (model inputs dict, labels) per split, the model's build arguments, and the
    vocabulary (word models; None for Hugging Face models, whose tokenizer is the checkpoint's).
    Train batches of similar lengths (cfg.bucket_by_length); validation and test rows sorted by length (evaluate
    returns their predictions in split order). `shard=(rank, world_size)`: this DDP worker's share
    of them (Ray Train's prepare_data_loader would put a DistributedSampler of single rows in their place)."""
    family = cfg.family
    prepared = family.prepare(cfg, dataset)
    loaders = {}
    for name, tensors in prepared.splits.items():
        ds = TensorDataset(*(tensors[f] for f in (*family.input_fields, "labels")))
        if name == "train" and cfg.bucket_by_length and "lengths" in tensors:
            sampler = LengthBuckets(tensors["lengths"], cfg.batch_size, max_tokens=cfg.batch_tokens, shard=shard or (0, 1))
            loaders[name] = DataLoader(ds, batch_sampler=sampler, collate_fn=family.collate)
            continue
        if name != "train" and "lengths" in tensors:  # evaluation: rows sorted by length (evaluate restores the order)
            loaders[name] = DataLoader(ds, batch_sampler=SortedBatches(tensors["lengths"], cfg.batch_size), collate_fn=family.collate)
            continue
        generator = torch.Generator().manual_seed(cfg.seed) if name == "train" else None
        rows = DistributedSampler(ds, num_replicas=shard[1], rank=shard[0]) if name == "train" and shard else None
        loaders[name] = DataLoader(ds, batch_size=cfg.batch_size, shuffle=name == "train" and rows is None, sampler=rows,
                                   generator=generator, collate_fn=family.collate)
    return loaders, prepared.build_args, prepared.vocab


# ------------------------------------------------------------------------------- optimisation
def build_optimizer(cfg: TrialConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    # Per-layer learning rates (layer-wise decay) where the model defines them, else one group;
    # no weight decay on biases and norms (standard AdamW practice).
    base = (model.parameter_groups(cfg.lr, cfg.layer_decay) if hasattr(model, "parameter_groups")
            else [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}])
    groups = []
    for group in base:
        decay = [p for p in group["params"] if p.ndim >= 2]
        no_decay = [p for p in group["params"] if p.ndim < 2]
        groups += [{"params": decay, "lr": group["lr"], "weight_decay": cfg.weight_decay},
                   {"params": no_decay, "lr": group["lr"], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    # fused: one CUDA kernel for the whole update instead of a few per tensor (CPU keeps the default path)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=all(p.is_cuda for g in groups for p in g["params"]) or None)


def lr_multiplier(schedule: str, step: int, warmup: int, total: int) -> float:
    """transformers' get_scheduler formulas (constant_with_warmup, linear, cosine with half a cycle) without
    importing transformers, which costs a word-model trial ~3 s of start-up on 2 cores; test_train checks
    that the two agree step by step."""
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 1.0 - progress) if schedule == "linear" else max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def build_scheduler(cfg: TrialConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(cfg.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(cfg.schedule, step, warmup, total_steps))


# --------------------------------------------------------------------------------- evaluation
def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """scikit-learn's f1_score(labels, predicted, average="macro"): the mean over the classes in either
    array of 2TP / (2TP + FP + FN). Not imported from there because scikit-learn's import costs every
    trial process 1.5 s before its first epoch; tests/test_train.py checks the two agree."""
    return float(np.mean([2 * np.sum((labels == c) & (predicted == c)) / (np.sum(labels == c) + np.sum(predicted == c))
                          for c in np.union1d(labels, predicted)]))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, device: torch.device, prefix: str) -> tuple[dict, np.ndarray]:
    """Metrics over a whole split, and the positive-class probabilities (for later analysis)."""
    model.eval()
    outputs, labels = [], []
    for inputs, y in loader:  # logits stay on the device until the end: no wait per batch, one copy back
        outputs.append(model(**{k: v.to(device) for k, v in inputs.items()})[0].float())
        labels.append(y)
    logits, y = torch.cat(outputs).cpu(), torch.cat(labels)
    loss = torch.nn.functional.cross_entropy(logits, y).item()
    p, y = torch.softmax(logits, -1)[:, 1].numpy(), y.numpy()
    pred = (p >= 0.5).astype(np.int64)
    metrics = {f"{prefix}_loss": loss, f"{prefix}_accuracy": float((pred == y).mean()),
               f"{prefix}_f1": macro_f1(y, pred)}
    if isinstance(loader.batch_sampler, SortedBatches):  # rows in length order: back to the split's
        p = loader.batch_sampler.unsort(p)
    return metrics, p


def reshuffle(loader: DataLoader, seed: int) -> None:
    """A new order every epoch, the same one after a resume: length buckets and the DistributedSampler of
    several workers are told the epoch (without it every epoch repeats one order); else the shuffle is reseeded."""
    if hasattr(getattr(loader, "batch_sampler", None), "set_epoch"):  # length buckets
        loader.batch_sampler.set_epoch(seed)
    elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
        loader.sampler.set_epoch(seed)
    elif getattr(loader, "generator", None) is not None:
        loader.generator.manual_seed(seed)


def validate(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> dict:
    """Validation metrics. With several Train workers, rank 0 evaluates the whole split and sends its
    numbers to every rank: they equal a single worker's (a DistributedSampler would pad the shards
    with repeated reviews), and every rank takes the same best-epoch and early-stopping decision."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return evaluate(model, loader, device, "val")[0]
    box = [evaluate(model, loader, device, "val")[0] if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    return {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in model.parameters())}


def _mixed_precision(cfg: TrialConfig, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """bfloat16 where the GPU has it, else float16 with a loss scaler; full precision on CPU."""
    dtype = None
    if cfg.amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dtype, torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)


class flush_denormals(contextlib.ContextDecorator):
    """Vanishing RNN gradients become denormal floats, which make CPU backward ~10x slower: flush them
    to zero while training, and give the process its IEEE behaviour back afterwards (others in it, such
    as a notebook or a test runner, may rely on it)."""

    def __enter__(self):
        torch.set_flush_denormal(True)
        return self

    def __exit__(self, *exc):
        torch.set_flush_denormal(False)
        return False


# ----------------------------------------------------------------------------------- the loop
@flush_denormals()
def train(cfg: TrialConfig, *, dataset: Dataset | None = None, on_epoch: EpochCallback | None = None,
          resume_from: str | Path | None = None, evaluate_test: bool = False, wrap_model: Callable | None = None,
          wrap_loader: Callable | None = None, shard: tuple[int, int] | None = None, progress: bool = True) -> TrainResult:
    """Train `cfg`'s model; after each epoch evaluate on validation, checkpoint, call `on_epoch`.

    The best epoch (by cfg.metric on validation) is restored at the end. The test split is
    touched only when `evaluate_test` is set, once, on the restored model.
    """
    start = time.perf_counter()
    set_seed(cfg.seed)
    dataset = dataset or load_trial_data(cfg)
    if not cfg.family.neural:
        return _fit_baseline(cfg, dataset, on_epoch, evaluate_test, start)

    device = pick_device(cfg.device)
    loaders, build_args, vocab = make_loaders(cfg, dataset, shard=shard)
    set_seed(cfg.seed)  # model init does not depend on how much randomness data prep used
    model = build_model(cfg, build_args).to(device)
    optimizer = build_optimizer(cfg, model)
    param_counts = count_parameters(model)
    train_loader = wrap_loader(loaders["train"]) if wrap_loader else loaders["train"]  # batches to this worker's device
    scheduler = build_scheduler(cfg, optimizer, cfg.epochs * len(train_loader))  # the steps this worker takes
    loss_fn = build_loss(cfg)
    amp_dtype, scaler = _mixed_precision(cfg, device)
    state = load_checkpoint(resume_from, model, optimizer, scheduler, scaler) if resume_from is not None else Progress()
    net = wrap_model(model) if wrap_model else model

    while not state.stopped(cfg):
        epoch = state.epoch + 1
        reshuffle(train_loader, cfg.seed * 1000 + epoch)
        net.train()
        epoch_start = time.perf_counter()
        sums: dict[str, float | torch.Tensor] = {}
        seen = 0
        bar = tqdm(train_loader, desc=f"{cfg.model} epoch {epoch}/{cfg.epochs}", leave=False, disable=not progress,
                   mininterval=BAR_SECONDS if sys.stderr.isatty() else LOG_BAR_SECONDS)
        for inputs, y in bar:
            inputs, y = {k: v.to(device) for k, v in inputs.items()}, y.to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss, parts = loss_fn(net, inputs, y)
            # the step's one wait for the device: the loss, read before the step (never write NaN into the weights)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at epoch {epoch}; lower lr (now {cfg.lr})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            sums["loss"] = sums.get("loss", 0.0) + loss_value * len(y)
            for k, v in parts.items():  # summed on the device, read once an epoch: a read here would wait for the step
                sums[k] = sums.get(k, 0.0) + v.float() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", refresh=False)  # drawn at the bar's own interval
        train_seconds = time.perf_counter() - epoch_start

        val_metrics = validate(model, loaders["val"], device)
        metrics = {"epoch": epoch, **{f"train_{k}": float(v) / seen for k, v in sums.items()}, **val_metrics,
                   "lr": max(scheduler.get_last_lr()), "epoch_seconds": train_seconds,
                   "samples_per_second": seen / train_seconds, **param_counts}
        state.record(cfg, metrics, model)
        if progress:
            print(f"epoch {epoch}: train_loss {metrics['train_loss']:.4f}  val_loss {metrics['val_loss']:.4f}  "
                  f"val_acc {metrics['val_accuracy']:.4f}  ({train_seconds:.1f}s)", flush=True)
        if on_epoch is not None:
            with epoch_checkpoint_folder() as ckpt:
                save_checkpoint(ckpt, model, optimizer, scheduler, scaler, state)
                on_epoch(metrics, ckpt)

    load_trainable_state(model, state.best_state)
    result = TrainResult(cfg, history=state.history, best_epoch=state.best_epoch, model=model, vocab=vocab)
    result.val, _ = evaluate(model, loaders["val"], device, "val")
    if evaluate_test:
        result.test, _ = evaluate(model, loaders["test"], device, "test")
    result.seconds = time.perf_counter() - start
    return result


def _fit_baseline(cfg: TrialConfig, dataset: Dataset, on_epoch, evaluate_test: bool, start: float) -> TrainResult:
    """Scikit-learn baselines: one fit, reported as a single epoch so sweeps treat them alike."""
    try:  # scikit-learn refuses parameters (min_df=0) and data (no term left after min_df) with ValueError
        pipeline = get_model(cfg.model).build(**cfg.model_args)
        pipeline.fit(dataset.train.texts, dataset.train.labels)
    except ValueError as e:
        raise UserError(f"model '{cfg.model}' with {cfg.model_args}: {str(e).splitlines()[0]}") from None
    result = TrainResult(cfg, best_epoch=1, model=pipeline)
    result.val, _ = _baseline_metrics(pipeline, dataset.val, "val")
    result.history = [{"epoch": 1, **result.val, METRICS[cfg.metric].best_key: result.val[cfg.metric], "finished": True,
                       "epoch_seconds": time.perf_counter() - start}]
    if on_epoch is not None:
        on_epoch(result.history[0], None)
    if evaluate_test:
        result.test, _ = _baseline_metrics(pipeline, dataset.test, "test")
    result.seconds = time.perf_counter() - start
    return result


def _baseline_metrics(pipeline, split, prefix: str) -> tuple[dict, np.ndarray]:
    """A fitted scikit-learn pipeline scored on one split: metrics and P(positive) per review."""
    proba = pipeline.predict_proba(split.texts)
    pred = proba.argmax(1)
    loss = float(-np.log(np.clip(proba[np.arange(len(pred)), split.labels], 1e-12, 1)).mean())
    return {f"{prefix}_loss": loss, f"{prefix}_accuracy": float((pred == split.labels).mean()),
            f"{prefix}_f1": macro_f1(split.labels, pred)}, proba[:, 1]


def evaluate_checkpoint(cfg: TrialConfig, checkpoint_dir: str | Path | None) -> Evaluation:
    """The one evaluation of a finished trial on the test split, from its checkpoint's best weights
    (validation is scored too: its predictions feed ensembles, which choose members on validation only)."""
    dataset = load_trial_data(cfg)
    if not cfg.family.neural or checkpoint_dir is None:  # no weights to load: refit (deterministic)
        model, vocab = train(cfg, dataset=dataset, progress=False).model, None
        scored = {name: _baseline_metrics(model, getattr(dataset, name), name) for name in ("val", "test")}
    else:
        device = pick_device(cfg.device)
        loaders, build_args, vocab = make_loaders(cfg, dataset)
        model = build_model(cfg, build_args)
        state = torch.load(Path(checkpoint_dir) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        load_trainable_state(model, state["best_model"])
        model.to(device)
        scored = {name: evaluate(model, loaders[name], device, name) for name in ("val", "test")}
    predictions = {name: prediction_table(getattr(dataset, name), probs) for name, (_, probs) in scored.items()}
    return Evaluation(scored["test"][0], predictions, model, vocab)
