"""What a sweep gains by opening its sqlite MLflow store while Ray starts (`open_runs` in `in_background`, in
imdb_ray/sweep/runner.py) instead of before: an existing store (checked, then opened) and a new one (created with
its tables), each way in a fresh process, as a sweep command meets them (imdb_ray's sweep modules imported, the
store's SQL layer not yet), alternating, REPEATS times each, medians kept.

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
    """One timed start: the store opened and Ray's start, one after the other or side by side; prints the seconds."""
    import ray

    from imdb_ray.sweep import runner
    from imdb_ray.tracking import creates_store

    check = not creates_store(uri)  # as run_sweep: an existing store is checked first
    start = time.perf_counter()
    if way == "one after the other":
        runner.open_runs(uri, "overlap", check)
        runner._start_ray(None, dashboard=False)
    else:
        opening = runner.in_background(runner.open_runs, uri, "overlap", check)
        runner._start_ray(None, dashboard=False)
        opening.result()
    print(json.dumps(time.perf_counter() - start), flush=True)
    ray.shutdown()


def timed(way: str, uri: str) -> float:
    proc = subprocess.run([sys.executable, __file__, "--child", way, "--uri", uri], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{way}: the timed process failed:\n{proc.stderr[-2000:]}")
    seconds = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"[store_check_overlap] {way} ({uri}): {seconds:.2f} s", file=sys.stderr, flush=True)
    return seconds


WAYS = ("one after the other", "side by side")


def measure(folder: str) -> dict[tuple[str, str], list[float]]:
    """{(store, way): seconds of each run}; a new store is a new file each run."""
    from mlflow.tracking import MlflowClient

    existing = f"sqlite:///{folder}/mlflow.db"
    MlflowClient(existing).search_experiments()  # made before anything is timed, as on a second sweep
    seconds: dict[tuple[str, str], list[float]] = {}
    for run in range(REPEATS):
        for store in ("existing", "new"):
            for way in WAYS:
                uri = existing if store == "existing" else f"sqlite:///{folder}/new-{run}-{WAYS.index(way)}.db"
                seconds.setdefault((store, way), []).append(timed(way, uri))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.uri)
    with tempfile.TemporaryDirectory(prefix="imdb_ray_store_") as folder:
        seconds = measure(folder)
    median = {key: statistics.median(runs) for key, runs in seconds.items()}
    lines = ["# Opening the MLflow store while Ray starts (CPU)", "",
             "Produced by `.venv/bin/python benchmarks/store_check_overlap.py`: a sqlite store opened (`open_runs`: an "
             "existing store checked first, a new one created with MLflow's tables) and a local Ray started "
             f"(`_start_ray`), each in a fresh process, alternating, {REPEATS} runs each; medians. A sweep on a local Ray "
             "does the second (`in_background`): the store is imports and SQL, Ray's start mostly waits on its processes. "
             "A new store is a user's first sweep (and `make quickstart` from a fresh clone).", "",
             "| store | opened and Ray started | seconds (median) | runs |", "|---|---|---|---|"]
    lines += [f"| {store} | {way} | {median[store, way]:.2f} | {', '.join(f'{s:.2f}' for s in runs)} |"
              for (store, way), runs in seconds.items()]
    lines.append("")
    for store in ("existing", "new"):
        serial, overlap = median[store, WAYS[0]], median[store, WAYS[1]]
        lines.append(f"- {store} store: side by side saves {serial - overlap:.2f} s per sweep command "
                     f"({overlap / serial:.2f} of the time).")
    (ROOT / "results" / "store_check_overlap.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
