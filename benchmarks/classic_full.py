"""Each classic model and the TF-IDF baseline on the full official split (22.5k train / 2.5k val /
25k test), one `python -m imdb_ray train` command per row; writes results/classic_cpu.md as it goes.

    .venv/bin/python benchmarks/classic_full.py [--only gru,cnn] [--out results/classic_cpu.md]
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--epochs", "4", "--patience", "2", "--max-len", "256", "--batch-size", "64", "--seed", "0", "--quiet"]
RUNS = {  # model -> its own flags (sensible defaults, not tuned on test)
    "tfidf_lr": [],
    "cnn": ["--lr", "1e-3"],
    "gru": ["--lr", "1e-3"],
    "lstm": ["--lr", "1e-3"],
    "cnn_lstm": ["--lr", "1e-3"],
    "attention_lstm": ["--lr", "1e-3"],
    "capsule_lstm": ["--lr", "1e-3"],
    "transformer": ["--lr", "5e-4", "--schedule", "linear", "--warmup-ratio", "0.1", "--epochs", "3"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated models")
    parser.add_argument("--out", default=str(ROOT / "results" / "classic_cpu.md"))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(RUNS)
    out = Path(args.out)
    rows = []
    header = ("# Classic models on the full IMDB split (CPU)\n\n"
              f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
              f"torch {torch.__version__}. Train 22,500 / val 2,500 (seeded, stratified, from the official train) / "
              "test 25,000 (official). Best epoch chosen on validation; test evaluated once.\n"
              "Produced by `.venv/bin/python benchmarks/classic_full.py`.\n\n"
              "| model | val acc | test acc | test macro-F1 | best epoch | epochs run | wall time (s) | command |\n"
              "|---|---|---|---|---|---|---|---|\n")
    for name in names:
        run_dir = ROOT / "runs" / f"classic_full-{name}"
        cmd = [sys.executable, "-m", "imdb_ray", "train", "--model", name, *COMMON, *RUNS[name],
               "--run-dir", str(run_dir)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        shown = "python -m imdb_ray train " + " ".join(shlex.quote(c) for c in cmd[4:-2])
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            rows.append(f"| {name} | failed (exit {proc.returncode}) | | | | | {wall:.0f} | `{shown}` |")
        else:
            m = json.loads((run_dir / "metrics.json").read_text())
            s = m["summary"]
            rows.append(f"| {name} | {s['val_accuracy']:.4f} | {s['test_accuracy']:.4f} | {s['test_f1']:.4f} | "
                        f"{s['best_epoch']} | {len(m['history'])} | {wall:.0f} | `{shown}` |")
        print(rows[-1], flush=True)
        out.write_text(header + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
