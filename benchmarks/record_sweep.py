"""Run a sweep file through the CLI exactly as a user would and record its closing leaderboard and
wall time in results/<sweep>_cpu.md.

    .venv/bin/python benchmarks/record_sweep.py sweeps/quickstart.py
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    sweep_file = Path(sys.argv[1])
    name = sweep_file.stem
    work = Path(tempfile.mkdtemp(prefix=f"imdb_ray_{name}_"))
    cmd = [sys.executable, "-m", "imdb_ray", "sweep", str(sweep_file.resolve()), "--storage", str(work / "ray"),
           "--tracking-uri", f"sqlite:///{work}/mlflow.db", *sys.argv[2:]]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"sweep failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = proc.stdout[proc.stdout.index(f"== {name}:"):].strip()
    # the sweep's leaderboard (paired comparisons, ensembles, confirmed configs) and plots, from its store
    report_dir = work / "report"
    subprocess.run([sys.executable, "-m", "imdb_ray", "report", "--sweep", name, "--tracking-uri", f"sqlite:///{work}/mlflow.db",
                    "--out", str(report_dir)], cwd=ROOT, check=True, capture_output=True)
    copied = [f"{name}_leaderboard.md", f"{name}_leaderboard.csv", f"{name}_pareto.png", f"{name}_curves.png", f"{name}_asha.png"]
    for file in copied:
        shutil.copy(report_dir / file, ROOT / "results" / file)
    text = (f"# `{sweep_file}` on this machine\n\n"
            f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU. Wall time of the whole command "
            f"(Ray start, shared data preparation, all trials, test evaluation, confirmation reruns): **{wall:.0f} s**.\n"
            f"Produced by `.venv/bin/python benchmarks/record_sweep.py {sweep_file} {' '.join(sys.argv[2:])}`"
            f" which runs `python -m imdb_ray sweep {sweep_file}`, then `python -m imdb_ray report --sweep {name}`: "
            f"`{name}_leaderboard.md` (paired comparisons, ensembles, confirmed configs) and its plots.\n\n"
            f"```\n{summary}\n```\n")
    (ROOT / "results" / f"{name}_cpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
