"""Each classic model and the TF-IDF baseline on the full official split (22.5k train / 2.5k val /
25k test), one `python -m imdb_ray train` command per row. Finished rows are kept in
runs/classic_full-<row>/ and reused, so `--only` reruns some rows without losing the others.

    .venv/bin/python benchmarks/classic_full.py [--only gru,cnn] [--rerun]
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--val-split", "random", "--epochs", "4", "--patience", "2", "--max-len", "256", "--batch-size", "64", "--seed", "0", "--quiet"]
RUNS = {  # row -> (model, its own flags): sensible defaults chosen before seeing test numbers
    "tfidf_lr": ("tfidf_lr", []),
    "nbsvm": ("nbsvm", []),  # its defaults (C 0.3, min_df 2, 1-3-grams) chosen on validation, seed 0
    "cnn": ("cnn", ["--lr", "1e-3"]),
    "gru": ("gru", ["--lr", "1e-3"]),
    "lstm": ("lstm", ["--lr", "1e-3"]),
    "cnn_lstm": ("cnn_lstm", ["--lr", "1e-3"]),
    "attention_lstm": ("attention_lstm", ["--lr", "1e-3"]),
    "capsule_lstm": ("capsule_lstm", ["--lr", "1e-3"]),
    # Attention is quadratic in length: ~1.3 s per batch of 64 x 256 on 2 cores, so 2 epochs here.
    "transformer": ("transformer", ["--lr", "5e-4", "--schedule", "linear", "--warmup-ratio", "0.1", "--epochs", "2"]),
}


def command(row: str) -> list[str]:
    model, flags = RUNS[row]
    return ["-m", "imdb_ray", "train", "--model", model, *COMMON, *flags, "--run-dir", f"runs/classic_full-{row}"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated rows to (re)run; the others are read from runs/")
    parser.add_argument("--rerun", action="store_true", help="rerun rows that already have results")
    parser.add_argument("--out", default=str(ROOT / "results" / "classic_cpu.md"))
    args = parser.parse_args()
    todo = args.only.split(",") if args.only else list(RUNS)
    for row in todo:
        done = ROOT / "runs" / f"classic_full-{row}" / "metrics.json"
        if done.exists() and not args.rerun:
            continue
        print(f"running {row} ...", flush=True)
        proc = subprocess.run([sys.executable, *command(row)], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{row} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        write_table(Path(args.out))
    write_table(Path(args.out))


def write_table(out: Path) -> None:
    lines = ["# Classic models on the full IMDB split (CPU)", "",
             f"Machine: {platform.machine()}, 2 cores, torch {torch.__version__} ({torch.get_num_threads()} threads), no GPU. "
             "Train 22,500 / val 2,500 (seeded, stratified, from the official train split) / test 25,000 (the official "
             "test split). Word2Vec (100 d, skip-gram) trained on the train split only. The best epoch is chosen on "
             "validation and restored; test is evaluated once. Wall time is the `train` command's own timer "
             "(data, Word2Vec unless cached, training, evaluation); other jobs shared the 2 cores during some rows.",
             "", "Produced by `.venv/bin/python benchmarks/classic_full.py`.", "",
             "| row | model | val acc | test acc | test macro-F1 | best epoch | epochs run | wall time (s) | command |",
             "|---|---|---|---|---|---|---|---|---|"]
    # rows recorded earlier (on another checkout, whose runs/ is not here) stay as they were written
    earlier = {ln.split(" | ")[0][2:]: ln for ln in out.read_text().splitlines() if ln.startswith("| ")} if out.exists() else {}
    for row in RUNS:
        path = ROOT / "runs" / f"classic_full-{row}" / "metrics.json"
        if not path.exists():
            if row in earlier:
                lines.append(earlier[row])
            continue
        m = json.loads(path.read_text())
        s = m["summary"]
        shown = "python " + " ".join(shlex.quote(c) for c in command(row))
        lines.append(f"| {row} | {s['model']} | {s['val_accuracy']:.4f} | {s['test_accuracy']:.4f} | {s['test_f1']:.4f} | "
                     f"{s['best_epoch']} | {len(m['history'])} | {s['seconds']:.0f} | `{shown}` |")
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
