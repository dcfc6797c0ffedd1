"""Run a sweep file through the CLI exactly as a user would and record its closing leaderboard and
wall time in results/<sweep>_cpu.md.

    .venv/bin/python benchmarks/record_sweep.py sweeps/quickstart.py
    .venv/bin/python benchmarks/record_sweep.py sweeps/classic.py --work runs/record-classic --record results/classic_sweep_cpu.md [sweep flags]

Other arguments go to `python -m imdb_ray sweep`, except `--record FILE` (where the summary goes instead
of results/<sweep>_cpu.md). With `--work DIR` the sweep's storage and MLflow store
live in DIR (else a fresh temporary folder), so a run longer than a session continues with the same
command plus `--resume`; the wall time recorded is the sum over the invocations (kept in DIR/wall_s.json).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU's model name (Linux), for the record: float kernels, and so trained weights, can differ between models."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "CPU model unknown"


def timeline(store: str, name: str, started: float, ended: float) -> str:
    """Where one invocation's wall time went, from its MLflow runs' start and end times: before the first trial, each
    stage's span beside the seconds its trials ran (their sum over the span and the trials at once: how full the
    slots were), between the stages, and after the last trial. The dry run's estimate counts the trials' seconds, a
    fixed cost and the test evaluations; an idle slot at a stage's end is what it leaves out."""
    from imdb_ray.tracking import SweepRuns

    runs = SweepRuns(store, name)
    parent = runs.parent()
    slots = int(float(parent.data.params.get("concurrency", 1)))
    trials = [r for r in runs.trials(parent.info.run_id) if r.info.end_time]
    stages = {stage: sorted(((r.info.start_time / 1e3, r.info.end_time / 1e3) for r in trials
                             if (r.data.tags.get("imdb_ray.stage") == "confirm") == (stage == "confirmation")))
              for stage in ("search", "confirmation")}
    parts, edge = [], started
    for stage, spans in stages.items():
        if not spans:
            continue
        begin, end = spans[0][0], max(e for _, e in spans)
        busy = sum(e - s for s, e in spans)
        gap = ("between the stages (test evaluation of the best trials, the next Tuner)" if parts else
               "before the first trial (imports, checks, shared data, Ray start, MLflow parent)")
        parts.append(f"{gap} {begin - edge:.0f} s")
        parts.append(f"{stage} {end - begin:.0f} s ({len(spans)} trials, {busy:.0f} trial-seconds: {busy / (end - begin) / slots:.0%} "
                     f"of {slots} slot(s) busy)")
        edge = end
    parts.append(f"after the last trial (test evaluation, registration, Ray stop) {ended - edge:.0f} s")
    total = sum(e - s for spans in stages.values() for s, e in spans)
    return (f"Where the wall time went (from the MLflow runs' start and end times): {'; '.join(parts)}. The trials ran "
            f"{total:.0f} trial-seconds in all ({total / 3600:.2f} CPU-hours).")


def take_path(flags: list[str], name: str) -> Path | None:
    """Remove `name PATH` from flags (they are this script's, not the sweep's); PATH resolved from the repo root."""
    if name not in flags:
        return None
    at = flags.index(name)
    path = (ROOT / flags[at + 1]).resolve()
    del flags[at:at + 2]
    return path


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):  # the rest of the command line is the sweep's: no argparse
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) > 1 else 2)
    sweep_file, flags = Path(sys.argv[1]), sys.argv[2:]
    name = sweep_file.stem
    # --record: another file for the summary (results/classic_cpu.md is classic_full.py's)
    record = take_path(flags, "--record") or ROOT / "results" / f"{name}_cpu.md"
    work = take_path(flags, "--work")
    if work:
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"imdb_ray_{name}_"))
    cmd = [sys.executable, "-m", "imdb_ray", "sweep", str(sweep_file.resolve()), "--storage", str(work / "ray"),
           "--tracking-uri", f"sqlite:///{work}/mlflow.db", *flags]
    walls = work / "wall_s.json"
    earlier = json.loads(walls.read_text()) if "--resume" in flags and walls.exists() else []
    # what --dry-run predicts for this command, measured here first, to set beside the wall time it really takes
    dry = subprocess.run([*cmd, "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    estimate = " ".join(ln.strip() for ln in dry.stdout.splitlines() if ln.strip().startswith(("once:", "total:"))) or "none printed"
    start, started_at = time.perf_counter(), time.time()

    def note_wall() -> None:
        walls.write_text(json.dumps(earlier + [round(time.perf_counter() - start, 1)]))

    def keep_noting(stop: threading.Event) -> None:  # so an invocation killed with its session still counts
        while not stop.wait(30):
            note_wall()

    stop = threading.Event()
    threading.Thread(target=keep_noting, args=(stop,), daemon=True).start()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # the sweep's progress, shown as it comes, and kept for the summary
        print(line, end="", flush=True)
        lines.append(line)
    proc.wait()
    out = "".join(lines)
    stop.set()
    note_wall()
    ended_at = time.time()
    wall = sum(json.loads(walls.read_text()))
    if proc.returncode != 0:
        sys.exit(f"sweep ended with exit {proc.returncode}; continue with the same command plus --resume")
    summary = out[out.index(f"== {name}:"):].strip()
    # the sweep's leaderboard (paired comparisons, ensembles, confirmed configs) and plots, from its store
    report_dir = work / "report"
    subprocess.run([sys.executable, "-m", "imdb_ray", "report", "--sweep", name, "--tracking-uri", f"sqlite:///{work}/mlflow.db",
                    "--out", str(report_dir)], cwd=ROOT, check=True, capture_output=True)
    copied = [f"{name}_leaderboard.md", f"{name}_leaderboard.csv", f"{name}_pareto.png", f"{name}_curves.png", f"{name}_asha.png"]
    for file in copied:
        shutil.copy(report_dir / file, ROOT / "results" / file)
    # its comparison.md (the original study's rows and the classic targets) from this sweep alone
    shutil.copy(report_dir / "comparison.md", ROOT / "results" / f"{name}_comparison.md")
    # one invocation's timeline (a resumed record's stages span sessions)
    where = "" if earlier else timeline(f"sqlite:///{work}/mlflow.db", name, started_at, ended_at) + "\n"
    text = (f"# `{sweep_file}` on this machine\n\n"
            f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}, {cpu_model()}), no GPU: the same seeds give these "
            f"numbers again on this CPU model; another can round differently in torch's kernels and train to other ones. "
            f"Wall time of the whole command "
            f"(Ray start, shared data preparation, all trials, test evaluation, confirmation reruns): **{wall:.0f} s**"
            f"{f' over {len(earlier) + 1} invocations' if earlier else ''}; what `--dry-run` estimated beforehand: "
            f"`{estimate}`.\n{where}"
            f"Produced by `.venv/bin/python benchmarks/record_sweep.py {sweep_file} {' '.join(sys.argv[2:])}`"
            f" which runs `python -m imdb_ray sweep {sweep_file}`, then `python -m imdb_ray report --sweep {name}`: "
            f"`{name}_leaderboard.md` (paired comparisons, ensembles, confirmed configs) and its plots.\n\n"
            f"```\n{summary}\n```\n")
    record.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
