"""Training throughput of each classic model with and without length-bucketed batches, side by side in
one run (same process, same data, same seed), and the validation accuracy each reaches.

    .venv/bin/python benchmarks/classic_speed.py        # writes results/classic_speed.md
    .venv/bin/python benchmarks/classic_speed.py --full-split --models cnn   # -> results/classic_speed_full.md

`--full-split`: the same pair on the official split (22.5k train, 25k test, 4 epochs, patience 2), each
evaluated once on test: whether buckets change accuracy beyond noise where it counts.

Without buckets a shuffled batch of 64 almost always holds one review at max_len, so every batch is
computed at full width; with them (sorted within chunks of 50 batches) short reviews travel together
and the collate cuts the padding. samples/s is the loop's own count over its training time (the
`samples_per_second` it logs), validation excluded.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from imdb_ray.config import TrialConfig
from imdb_ray.train import load_trial_data, train

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["cnn", "gru", "lstm", "cnn_lstm", "attention_lstm", "capsule_lstm", "transformer"]
SETTINGS = {"n_train": 3000, "n_test": 100, "max_len": 256, "batch_size": 64, "epochs": 2, "lr": 1e-3, "val_split": "random"}
FULL = {"max_len": 256, "batch_size": 64, "epochs": 4, "patience": 2, "lr": 1e-3, "val_split": "random"}  # classic_full.py's


def measure(model: str, bucket: bool, dataset, settings: dict = SETTINGS, test: bool = False) -> dict:
    cfg = TrialConfig.from_flat({"model": model, **settings, "bucket_by_length": bucket})
    result = train(cfg, dataset=dataset, progress=False, evaluate_test=test)
    speeds = [h["samples_per_second"] for h in result.history]  # mean over the epochs
    return {"samples_per_second": sum(speeds) / len(speeds), "val_accuracy": result.val["val_accuracy"],
            "test_accuracy": result.test.get("test_accuracy"), "best_epoch": result.best_epoch}


def full_split(models: list[str], out: Path) -> None:
    """Each model twice on the official split, shuffled then bucketed, test once each."""
    dataset = load_trial_data(TrialConfig.from_flat({"model": models[0], **FULL}))
    lines = ["# Length buckets on the full split: accuracy and speed", "",
             f"Command: `.venv/bin/python benchmarks/classic_speed.py --full-split --models {','.join(models)}`. Machine: "
             f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, no GPU; other jobs "
             f"may share the cores, so speed is a ratio within a row. Settings {FULL}, seed 0, official split (train "
             f"{len(dataset.train):,} / val {len(dataset.val):,} / test {len(dataset.test):,}); the best validation epoch is "
             "restored and evaluated once on test. Same seed, same data, same Word2Vec vectors: only the batch order differs.",
             "", "| model | test acc, shuffled | test acc, buckets | val acc, shuffled | val acc, buckets | best epoch | "
             "samples/s, shuffled | samples/s, buckets | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for model in models:
        off, on = measure(model, False, dataset, FULL, test=True), measure(model, True, dataset, FULL, test=True)
        lines.append(f"| {model} | {off['test_accuracy']:.4f} | {on['test_accuracy']:.4f} | {off['val_accuracy']:.4f} | "
                     f"{on['val_accuracy']:.4f} | {off['best_epoch']} / {on['best_epoch']} | {off['samples_per_second']:.0f} | "
                     f"{on['samples_per_second']:.0f} | {on['samples_per_second'] / off['samples_per_second']:.2f}x |")
        out.write_text("\n".join(lines) + "\n")
        print(lines[-1], flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=None, help="default results/classic_speed.md (--full-split: classic_speed_full.md)")
    parser.add_argument("--full-split", action="store_true", help="the official split, test once per run (slow)")
    args = parser.parse_args()
    if args.full_split:
        models = args.models.split(",") if args.models != ",".join(MODELS) else ["cnn"]
        return full_split(models, Path(args.out or ROOT / "results" / "classic_speed_full.md"))
    args.out = args.out or str(ROOT / "results" / "classic_speed.md")
    dataset = load_trial_data(TrialConfig.from_flat({"model": "gru", **SETTINGS}))
    measure("gru", True, dataset)  # warm-up (allocator, thread pool, denormal flush), not recorded
    rows = []
    for i, model in enumerate(args.models.split(",")):
        start = time.perf_counter()
        if i % 2:  # alternate which goes first, so neither always runs on a warmer machine
            on, off = measure(model, True, dataset), measure(model, False, dataset)
        else:
            off, on = measure(model, False, dataset), measure(model, True, dataset)
        rows.append((model, off, on))
        print(f"[classic_speed] {model}: {off['samples_per_second']:.0f} -> {on['samples_per_second']:.0f} samples/s "
              f"({on['samples_per_second'] / off['samples_per_second']:.2f}x; {time.perf_counter() - start:.0f}s)", flush=True)
    lengths = [min(len(t.split()), SETTINGS["max_len"]) for t in dataset.train.texts]
    lines = ["# Classic models: training throughput with length-bucketed batches", "",
             f"Command: `.venv/bin/python benchmarks/classic_speed.py`. Machine: {platform.machine()}, "
             f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, no GPU. Each model trained twice in "
             f"one process on the same {len(dataset.train):,} real training reviews ({SETTINGS}), seed 0: without and "
             "with `bucket_by_length` (the default now), after one warm-up run, the order alternating by model. samples/s is the loop's own count over its training time, "
             f"mean of {SETTINGS['epochs']} epochs; val accuracy is the best epoch's on the same 10% validation split. "
             f"Reviews here average {sum(lengths) / len(lengths):.0f} words after truncation to {SETTINGS['max_len']}.",
             "", "| model | samples/s, shuffled batches | samples/s, length buckets | speed-up | val acc, shuffled | val acc, buckets |",
             "|---|---|---|---|---|---|"]
    for model, off, on in rows:
        lines.append(f"| {model} | {off['samples_per_second']:.0f} | {on['samples_per_second']:.0f} | "
                     f"{on['samples_per_second'] / off['samples_per_second']:.2f}x | {off['val_accuracy']:.4f} | "
                     f"{on['val_accuracy']:.4f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
