"""Plain cross-entropy vs R-Drop vs SupCon vs both, on one classic model (BiGRU) and a real IMDB
subset, three seeds each: mean +- standard deviation of test accuracy and the time cost per epoch.
Variants are interleaved seed by seed so that machine load affects them alike.
Runs are kept in runs/strategies-<variant>-s<seed>/ and reused. Writes results/strategies_cpu.md.

    .venv/bin/python benchmarks/strategies_cpu.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ["--model", "gru", "--hidden", "64", "--n-train", "5000", "--n-test", "5000", "--max-len", "200", "--epochs", "3",
        "--lr", "2e-3", "--val-split", "random", "--quiet"]
VARIANTS = {
    "cross-entropy": [],
    "R-Drop (alpha 1)": ["--rdrop-alpha", "1.0"],
    "SupCon (weight 0.1, tau 0.1)": ["--supcon-weight", "0.1", "--supcon-tau", "0.1"],
    "R-Drop + SupCon": ["--rdrop-alpha", "1.0", "--supcon-weight", "0.1", "--supcon-tau", "0.1"],
}
SEEDS = [0, 1, 2]


def run_dir(variant: str, seed: int) -> str:
    slug = variant.split(" (")[0].lower().replace(" + ", "+").replace(" ", "-")
    return f"runs/strategies-{slug}-s{seed}"


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    for seed in SEEDS:
        for variant, flags in VARIANTS.items():
            out = ROOT / run_dir(variant, seed)
            if (out / "metrics.json").exists():
                continue
            print(f"{variant} seed {seed} ...", flush=True)
            cmd = [sys.executable, "-m", "imdb_ray", "train", *BASE, *flags, "--seed", str(seed), "--run-dir", str(out)]
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    rows, base_epoch = [], None
    for variant, flags in VARIANTS.items():
        ms = [json.loads((ROOT / run_dir(variant, s) / "metrics.json").read_text()) for s in SEEDS]
        acc = [m["summary"]["test_accuracy"] for m in ms]
        epoch_s = statistics.mean(h["epoch_seconds"] for m in ms for h in m["history"])
        base_epoch = base_epoch or epoch_s
        cmd = f"python -m imdb_ray train {' '.join(BASE + flags)} --seed {{0,1,2}}"
        rows.append(f"| {variant} | {statistics.mean(acc):.4f} ± {statistics.stdev(acc):.4f} | "
                    f"{' / '.join(f'{a:.4f}' for a in acc)} | {epoch_s:.1f} | {epoch_s / base_epoch:.2f}x | `{cmd}` |")
    text = "\n".join([
        "# Training strategies on CPU: cross-entropy vs R-Drop vs SupCon", "",
        "BiGRU (hidden 64, Word2Vec 100 d trained on the train split), 5,000 reviews (4,500 train / 500 val, seeded, "
        "stratified), 5,000 official-test reviews (seeded subset), 200 words, 3 epochs, lr 2e-3. Best validation epoch "
        "restored, test evaluated once. Mean ± sample standard deviation over seeds 0, 1, 2; epoch time is training only, "
        "averaged over all epochs of the three seeds. 2 CPU cores, no GPU.", "",
        "Produced by `.venv/bin/python benchmarks/strategies_cpu.py`.", "",
        "| strategy | test accuracy (mean ± sd) | per seed | s / epoch | epoch time vs CE | command |",
        "|---|---|---|---|---|---|", *rows])
    (ROOT / "results" / "strategies_cpu.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
