"""What a sweep gains by checking an existing sqlite MLflow store while Ray starts (`in_background` in
imdb_ray/sweep/runner.py) instead of before: each way in a fresh process, as a sweep command meets them (imdb_ray's
sweep modules imported, the store's SQL layer not yet), alternating, REPEATS times each, medians kept.

    .venv/bin/python benchmarks/store_check_overlap.py
Writes results/store_check_overlap.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 5


def child(way: str, uri: str) -> None:
    """One timed start: the store check and Ray's start, one after the other or side by side; prints the seconds."""
    import ray

    from imdb_ray.sweep import runner

    start = time.perf_counter()
    if way == "one after the other":
        runner.check_reachable(uri)
        runner._start_ray(None, dashboard=False)
    else:
        check = runner.in_background(runner.check_reachable, uri)
        runner._start_ray(None, dashboard=False)
        check.result()
    print(json.dumps(time.perf_counter() - start), flush=True)
    ray.shutdown()


def timed(way: str, uri: str) -> float:
    proc = subprocess.run([sys.executable, __file__, "--child", way, "--uri", uri], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{way}: the timed process failed:\n{proc.stderr[-2000:]}")
    seconds = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"[store_check_overlap] {way}: {seconds:.2f} s", file=sys.stderr, flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.uri)
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix="imdb_ray_store_") as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        MlflowClient(uri).search_experiments()  # the store exists before anything is timed, as on a second sweep
        ways = ("one after the other", "side by side")
        seconds: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(REPEATS):
            for way in ways:
                seconds[way].append(timed(way, uri))
    serial, overlap = (statistics.median(seconds[way]) for way in ways)
    lines = ["# Checking the MLflow store while Ray starts (CPU)", "",
             "Produced by `.venv/bin/python benchmarks/store_check_overlap.py`: an existing sqlite store checked "
             "(`check_reachable`) and a local Ray started (`_start_ray`), each in a fresh process, alternating, "
             f"{REPEATS} runs each; medians. A sweep command does the second since the store check went beside Ray's "
             "start (`in_background`): the check is imports and schema reads, Ray's start mostly waits on "
             "its processes.", "",
             "| store check and Ray start | seconds (median) | runs |", "|---|---|---|"]
    lines += [f"| {way} | {statistics.median(seconds[way]):.2f} | {', '.join(f'{s:.2f}' for s in seconds[way])} |" for way in ways]
    lines += ["", f"Side by side saves {serial - overlap:.2f} s per sweep command ({overlap / serial:.2f} of the time)."]
    (ROOT / "results" / "store_check_overlap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
