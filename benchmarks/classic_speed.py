"""Training throughput of each classic model with and without length-bucketed batches, side by side in
one run (same process, same data, same seed), and the validation accuracy each reaches.

    .venv/bin/python benchmarks/classic_speed.py        # writes results/classic_speed.md

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


def measure(model: str, bucket: bool, dataset) -> dict:
    cfg = TrialConfig.from_flat({"model": model, **SETTINGS, "bucket_by_length": bucket})
    result = train(cfg, dataset=dataset, progress=False)
    speeds = [h["samples_per_second"] for h in result.history]  # mean over the epochs
    return {"samples_per_second": sum(speeds) / len(speeds), "val_accuracy": max(h["val_accuracy"] for h in result.history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=str(ROOT / "results" / "classic_speed.md"))
    args = parser.parse_args()
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
