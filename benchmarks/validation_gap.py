"""Does validation predict test? The val->test gap of TF-IDF+LR and two neural models, 3 seeds each,
with the validation split drawn at random (stratified) or by movie (`val_split="group"`), on the full
official split (22.5k train / 2.5k val / 25k test).

    .venv/bin/python benchmarks/validation_gap.py        # writes results/validation_gap.md

Each run records its validation accuracy at the best epoch (what selection sees), at the last epoch
(no selection over epochs), and the test accuracy of the kept weights. Finished runs are kept in
runs/validation_gap.jsonl, so an interrupted run continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from imdb_ray.config import TrialConfig
from imdb_ray.train import load_trial_data, train

ROOT = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2)
SPLITS = ("random", "group")
COMMON = {"max_len": 256, "batch_size": 64, "patience": 0}
MODELS = {  # settings chosen before seeing any test number (as in benchmarks/classic_full.py), 3 epochs each
    "tfidf_lr": {},
    "cnn": {"lr": 1e-3, "epochs": 3},
    "attention_lstm": {"lr": 1e-3, "epochs": 3},
}


def run(model: str, split: str, seed: int, dataset) -> dict:
    cfg = TrialConfig.from_flat({"model": model, **COMMON, **MODELS[model], "val_split": split, "seed": seed,
                                 "split_seed": seed})
    result = train(cfg, dataset=dataset, evaluate_test=True, progress=False)
    curve = [h["val_accuracy"] for h in result.history]
    return {"model": model, "split": split, "seed": seed, "val_best": max(curve), "val_last": curve[-1],
            "best_epoch": result.best_epoch, "epochs": len(curve), "test": result.test["test_accuracy"],
            "n_val": len(dataset.val), "seconds": round(result.seconds, 1)}


def write(rows: list[dict], out: Path) -> None:
    lines = ["# Does validation predict test? (val->test gap, random vs movie-grouped validation)", "",
             f"Command: `.venv/bin/python benchmarks/validation_gap.py`. Machine: {platform.machine()}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}, no GPU. Full official split: train minus "
             "~10% validation (random: 2,500 reviews, stratified; group: whole movies, ~2,450 reviews), test = the "
             "25,000 official test reviews. Seeds 0, 1, 2 (each seed draws its own validation split and initialises "
             f"its own model). Settings: {json.dumps(COMMON)}; {json.dumps({k: v for k, v in MODELS.items() if v})}.",
             "", "Gap = validation accuracy minus test accuracy, in points (positive: validation is optimistic). "
             "`best` is the epoch selection keeps (what a sweep ranks on); `last` is the last epoch's validation, "
             "which no selection has touched.", "",
             *([f"**Partial: {len(rows)} of {len(SEEDS) * len(SPLITS) * len(MODELS)} runs recorded so far** "
                "(the command continues where it stopped).", ""] if len(rows) < len(SEEDS) * len(SPLITS) * len(MODELS) else []),
             "| model | validation | seeds | val (best epoch) | val (last epoch) | test | gap best-test | gap last-test | per seed: best-test |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        for split in SPLITS:
            got = [r for r in rows if r["model"] == model and r["split"] == split]
            if not got:
                continue
            mean = lambda k: float(np.mean([r[k] for r in got]))  # noqa: E731
            gaps = [100 * (r["val_best"] - r["test"]) for r in got]
            gap_last = float(np.mean([100 * (r["val_last"] - r["test"]) for r in got]))
            lines.append(f"| {model} | {split} | {len(got)} | {mean('val_best'):.4f} | {mean('val_last'):.4f} | "
                         f"{mean('test'):.4f} | {np.mean(gaps):+.2f} | {gap_last:+.2f} | "
                         + " / ".join(f"{g:+.2f}" for g in gaps) + " |")
    lines += ["", "Runs (one line each, as recorded):", "", "```"] + [json.dumps(r) for r in rows] + ["```"]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "validation_gap.md"))
    parser.add_argument("--log", default=str(ROOT / "runs" / "validation_gap.jsonl"))
    args = parser.parse_args()
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    todo = [(s, sp, m) for s in SEEDS for sp in SPLITS for m in MODELS
            if not any((r["seed"], r["split"], r["model"]) == (s, sp, m) for r in rows)]
    print(f"[validation_gap] {len(rows)} run(s) recorded, {len(todo)} to go", flush=True)
    for i, (seed, split, model) in enumerate(todo, 1):
        start = time.perf_counter()
        dataset = load_trial_data(TrialConfig(val_split=split, split_seed=seed))
        row = run(model, split, seed, dataset)
        rows.append(row)
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"[validation_gap] {i}/{len(todo)} {model} {split} seed {seed}: val {row['val_best']:.4f} "
              f"test {row['test']:.4f} ({time.perf_counter() - start:.0f}s)", flush=True)
        write(rows, Path(args.out))
    write(rows, Path(args.out))


if __name__ == "__main__":
    main()
