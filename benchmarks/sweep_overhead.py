"""What the sweep engine costs beyond training, side by side in one run, as a user meets it: whole commands. A
plain process (`python benchmarks/sweep_overhead.py --plain N`: import, then N small `train()` calls) against
`python -m imdb_ray sweep` of the same N trials (one at a time), for N = 1 and N = TRIALS, for each trainer.

    per-trial fixed cost = (trials' span in the sweep of N - in the sweep of 1) / (N - 1) - one warm plain trial
    per-sweep fixed cost = sweep command(N) - plain process(N) - N x per-trial fixed cost
                           (CLI imports, ray.init, MLflow parent, study, the first trial's process, test evaluation,
                           registration, Ray stop)

The trials' spans and the sweep's phases come from the times its console lines were printed. Plus the shared
preparation: the first trial builds tokens + Word2Vec, later trials read the cache.

    .venv/bin/python benchmarks/sweep_overhead.py
Writes results/sweep_overhead.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRIALS = 8
REPEATS = 3  # every command is run this many times, alternating, and the median kept: one run of each moved by 10-15 %
# between runs on this shared 2-core machine (an 8-trial Ray Train sweep's trials: 93-106 s in three runs of one day)
SETTINGS = {"model": "gru", "n_train": 2000, "n_test": 500, "epochs": 1, "max_len": 100, "hidden": 32, "val_split": "random"}
SWEEP_FILE = """from ray import tune
from imdb_ray.sweep import Sweep

sweep = Sweep(name={name!r}, space={{**{settings!r}, "seed": tune.grid_search(list(range({trials})))}}, search="grid",
              scheduler="fifo", num_samples=1, trainer={trainer!r}, cpus_per_worker=1, max_failures=0, max_concurrent=1,
              test_top=1, ensemble_top=0)
"""


def plain_process(cache: str, trials: int) -> None:
    """--plain N: what a user's own script would do; prints each train() call's seconds as JSON."""
    import torch

    from imdb_ray.config import TrialConfig
    from imdb_ray.train import train

    torch.set_num_threads(1)  # what a trial with cpus_per_worker=1 gets
    seconds = []
    for seed in range(trials):
        start = time.perf_counter()
        train(TrialConfig.from_flat({**SETTINGS, "cache_dir": cache, "seed": seed}), progress=False)
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


def prepare(cache: str) -> list[float]:
    """Every seed's tokens and Word2Vec, built before anything is timed (the sweeps and the plain runs all find
    them cached); the first seed's build and three cache hits timed, for the preparation table."""
    from imdb_ray.config import TrialConfig
    from imdb_ray.text import prepare_word_data
    from imdb_ray.train import load_trial_data

    dataset = load_trial_data(TrialConfig.from_flat({**SETTINGS, "cache_dir": cache, "seed": 0}))
    prep = []
    for seed in [0, 0, 0, 0, *range(1, TRIALS)]:
        start = time.perf_counter()
        prepare_word_data(TrialConfig.from_flat({**SETTINGS, "cache_dir": cache, "seed": seed}), dataset)
        prep.append(time.perf_counter() - start)
    return prep[:4]


# The sweep command with Tune's trial processes not reused (reuse_actors=False, as every Ray Train trial ran before
# callbacks.EndStoppedTrainRuns made reuse safe for them): the row beside it measures what reuse buys.
NO_REUSE = ("import runpy, sys, ray.tune; made = ray.tune.TuneConfig; "
            "ray.tune.TuneConfig = lambda **kw: made(**{**kw, 'reuse_actors': False}); "
            "sys.argv[0] = 'imdb_ray'; runpy.run_module('imdb_ray', run_name='__main__')")
# (row, trainer, Ray's defaults?, reuse Tune's trial processes?)
ROWS = [("auto", "auto", False, True), ("auto, Ray's defaults", "auto", True, True), ("ray_train", "ray_train", False, True),
        ("ray_train, no process reuse", "ray_train", False, False), ("ray_train, Ray's defaults", "ray_train", True, True)]


def timed_plain(cache: str, trials: int) -> tuple[float, list[float]]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--plain", str(trials), "--cache", cache], cwd=ROOT, check=True,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    print(f"[overhead] plain process of {trials} trial(s): {wall:.1f} s", file=sys.stderr, flush=True)
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def ray_defaults() -> dict[str, str]:
    """What a local Ray gets from imdb_ray (runner.LOCAL_RAY_ENV) put back to Ray's own defaults, for the rows beside:
    Ray Train's as the installed Ray defines them; the raylet's worker processes started when the driver connects, on
    as Ray ships it (its C++ config, prestart_worker_first_driver, which Python does not expose)."""
    from ray.train.v2._internal import constants as train

    return {train.ENABLE_PREEMPTION_WATCHER_ENV_VAR: str(int(train.DEFAULT_ENABLE_PREEMPTION_WATCHER)),
            train.HEALTH_CHECK_INTERVAL_S_ENV_VAR: str(train.DEFAULT_HEALTH_CHECK_INTERVAL_S),
            "RAY_prestart_worker_first_driver": "1"}


def timed_sweep(work: Path, cache: str, trainer: str, trials: int, env: dict | None = None,
                reuse: bool = True) -> tuple[float, dict[str, float], int]:
    """`python -m imdb_ray sweep` of `trials` seeds of SETTINGS (`reuse` False: through NO_REUSE), its results under
    `work`, its MLflow runs in the one store beside (created by the first sweep); its wall seconds, phases and the
    Python processes Ray started."""
    name = f"overhead_{trainer}_{trials}"
    work.mkdir(parents=True, exist_ok=True)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt"))  # this sweep's Ray session alone, for its process count (short: Ray's
    env = {**(env or {}), "RAY_TMPDIR": str(ray_tmp)}  # sockets live under it, and a socket path has at most 107 bytes)
    source = work / f"{name}.py"
    source.write_text(SWEEP_FILE.format(name=name, settings=SETTINGS, trials=trials, trainer=trainer))
    stamps = []
    start = time.perf_counter()
    command = [sys.executable, "-m", "imdb_ray"] if reuse else [sys.executable, "-c", NO_REUSE]
    proc = subprocess.Popen([*command, "sweep", str(source), "--storage", str(work / "ray"),
                             "--tracking-uri", f"sqlite:///{work.parent}/mlflow.db", "--cache-dir", cache],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    for line in proc.stdout:
        stamps.append((time.perf_counter(), line))
        print(line, end="", flush=True)
    if proc.wait() != 0:
        sys.exit(f"{name}: the sweep command failed (exit {proc.returncode})")
    end = time.perf_counter()
    print(f"[overhead] {trainer} sweep of {trials} trial(s): {end - start:.1f} s", file=sys.stderr, flush=True)
    processes, runs = worker_processes(ray_tmp), train_runs(ray_tmp)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return end - start, phases(stamps, start, end), processes, runs


def worker_processes(ray_tmp: Path) -> int:
    """Python worker processes the raylet started in the session(s) under `ray_tmp` (Ray's own log of each start)."""
    return sum(log.read_text(errors="replace").count("Started worker process") for log in ray_tmp.glob("**/logs/raylet*.out"))


# What a Ray Train controller logs (its "sys" log, Ray 2.60's words) as a run goes on, in order. The controller runs in
# the trial's process (ray_compat.run_controller_in_process), and the runs of the trials that process served follow
# one another in its log: a run starts with the first line after the last run's "Shutting down".
TRAIN_EVENTS = {"ready": "Requesting resources", "created": "worker actors created", "launched": "Train function launched",
                "done": "Shutting down"}
MOMENTS = {"start": "trial started in its process", "ready": "resources asked", "created": "worker processes up",
           "launched": "train function launched", "done": "workers told to stop", "next": "next trial started"}
TRIAL_PHASES = {  # (from, to) of each phase of a Ray Train trial, and what happens in it
    ("start", "ready"): "Tune's reset of the trial's process for it; the Train controller's set-up (in that process)",
    ("ready", "created"): "placement group; the worker's and the sync actor's processes started",
    ("created", "launched"): "Train context on the worker (it imports Ray Train and torch); torch.distributed set up",
    ("launched", "done"): "the train function: 1 epoch, validation, checkpoint (its first torch.optim optimizer imports torch._dynamo)",
    ("done", "next"): "the run's end (its workers), the report to Tune, Tune's bookkeeping, the next trial's start"}


def _stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def train_runs(ray_tmp: Path) -> list[dict[str, float]]:
    """Every Ray Train run in the session(s) under `ray_tmp`, in start order: when it started (its first line in its
    controller's log) and when the controller logged each of TRAIN_EVENTS."""
    runs = []
    for log in ray_tmp.glob("**/logs/train/ray-train-sys-controller-*.log"):
        run: dict[str, float] = {}
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if "done" in run and TRAIN_EVENTS["done"] not in record["message"]:  # the next run, in this process
                runs.append(run)
                run = {}
            run.setdefault("start", _stamp(record["asctime"]))
            for event, words in TRAIN_EVENTS.items():
                if words in record["message"]:
                    run.setdefault(event, _stamp(record["asctime"]))
        runs += [run] if run else []
    return sorted(runs, key=lambda run: run["start"])


def trial_phases(runs: list[dict[str, float]]) -> dict[tuple[str, str], float]:
    """Each TRIAL_PHASES span's median over consecutive runs (a run's "next": the next run's start)."""
    spans = [{**run, "next": after["start"]} for run, after in zip(runs, runs[1:])]
    return {(a, b): statistics.median(span[b] - span[a] for span in spans) for a, b in TRIAL_PHASES}


IMPORTS = {"the worker's": ["ray.train.torch", "torch._dynamo"]}


def import_seconds(modules: list[str], runs: int = 3) -> list[float]:
    """Seconds a fresh process on this machine takes to import each of `modules` in turn after `import ray`
    (median of `runs` processes): what a Ray Train trial's new processes import before they work."""
    code = ("import json, time, ray; found = []\n"
            f"for module in {modules!r}:\n"
            "    t = time.perf_counter(); __import__(module); found.append(time.perf_counter() - t)\n"
            "print(json.dumps(found))")
    found = [json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
             for _ in range(runs)]
    return [statistics.median(seconds) for seconds in zip(*found)]


def phases(stamps: list[tuple[float, str]], start: float, end: float) -> dict[str, float]:
    """Seconds of a sweep command's phases, from its console lines: before Ray (imports, validation, shared data),
    Ray start and the MLflow parent run, the trials, and the close (test evaluation, registration, Ray stop)."""
    first = lambda marker: next(t for t, line in stamps if marker in line)  # noqa: E731
    last = [t for t, line in stamps if line.startswith("[imdb_ray] sweep:")][-1]
    ray_from, trials_from = first("starting Ray"), first("sample(s), up to")
    return {"before Ray (imports, checks, shared data)": ray_from - start, "Ray start (an existing store checked beside it) + MLflow parent": trials_from - ray_from,
            "trials": last - trials_from, "test evaluation, registration, Ray stop": end - last}


def median_run(runs: list[tuple]) -> tuple:
    """The run with the median wall time (its phases or call times with it)."""
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


def warm_trial(plain_run: tuple) -> float:
    """Seconds of one warm train() call: calls 2..N of a plain process of N (torch warmed up)."""
    return sum(plain_run[1][1:]) / (TRIALS - 1)


def fixed_costs(plain_many: tuple, one: tuple, many: tuple, warm: float) -> tuple[float, float]:
    """(per trial, per sweep) seconds from a plain process of TRIALS and sweeps of 1 and TRIALS (module docstring)."""
    per_trial = (many[1]["trials"] - one[1]["trials"]) / (TRIALS - 1) - warm
    return per_trial, many[0] - plain_many[0] - TRIALS * per_trial


def per_sweep_by_round(runs: dict, trainer: str = "auto") -> list[float]:
    """An auto sweep's per-sweep cost from each alternating round's own plain process and sweeps: how far one
    round's figure moves from the next on this machine."""
    rounds = zip(runs["plain", TRIALS], runs[trainer, 1], runs[trainer, TRIALS])
    return [fixed_costs(plain, one, many, warm_trial(plain))[1] for plain, one, many in rounds]


def report(plain: dict, sweeps: dict, prep: list[float], rounds: dict[str, list[float]] | None = None,
           imports: dict[str, list[float]] | None = None) -> list[str]:
    warm = warm_trial(plain[TRIALS])
    lines = ["# Fixed cost of the sweep engine (CPU)", "",
             "Produced by `.venv/bin/python benchmarks/sweep_overhead.py`; every row measured in one run, whole commands "
             f"as a user runs them, one after another on an otherwise idle machine. A trial: {SETTINGS} on the bundled "
             "IMDB data, one torch thread, trials one at a time, every seed's Word2Vec built beforehand (all runs find "
             f"it cached). Every row: the median of {REPEATS} runs, all commands run alternately. A plain process of 1 / {TRIALS} `train()` calls (Python start, imports, the calls): "
             f"**{plain[1][0]:.1f} s / {plain[TRIALS][0]:.1f} s**; one warm `train()` call in it: **{warm:.2f} s**.", "",
             f"| trainer | sweep of 1 trial (s) | sweep of {TRIALS} trials (s) | sweep of {TRIALS} / plain process of {TRIALS} | "
             "fixed cost per trial (s) | fixed cost per sweep (s) | Python processes Ray started per trial |",
             "|---|---|---|---|---|---|---|"]
    for trainer in [row for row, *_ in ROWS]:
        one, many = sweeps[trainer, 1], sweeps[trainer, TRIALS]
        per_trial, per_sweep = fixed_costs(plain[TRIALS], one, many, warm)
        procs = (many[2] - one[2]) / (TRIALS - 1)
        lines.append(f"| {trainer} | {one[0]:.1f} | {many[0]:.1f} | {many[0] / plain[TRIALS][0]:.2f} | {per_trial:+.2f} "
                     f"| {per_sweep:+.1f} | {procs:.1f} |")
    if rounds:
        lines += ["", f"The auto sweeps' fixed cost per sweep computed within each of the {len(next(iter(rounds.values())))} alternating rounds "
                  "(that round's plain processes and sweeps alone): " + "; ".join(
                      f"{trainer}: " + ", ".join(f"{r:+.1f}" for r in found) for trainer, found in rounds.items()) +
                  " s: how far the figure moves between rounds of one run. Between runs on different days it has moved more (Ray's start "
                  "and the first trial's process slower, the plain process not): compare rows of one run, not of two."]
    lines += ["", f"Per trial: the trials' span in the sweep of {TRIALS} less the sweep of 1's, over {TRIALS - 1} trials, "
              f"less one warm plain trial. Per sweep: the sweep of {TRIALS} less the plain process of {TRIALS} less "
              f"{TRIALS} per-trial costs. \"Ray's defaults\": a worker process per CPU started for tasks when the driver "
              "connects, Ray Train's preemption watcher on and its controller polling every 2 s, as Ray ships them; a "
              "local Ray started by imdb_ray starts no worker ahead (no trial process would take it), turns the watcher "
              "off and polls every 0.2 s (`LOCAL_RAY_ENV` in imdb_ray/sweep/runner.py). \"No process reuse\": Tune's "
              "reuse_actors off, each trial in a Tune trial process of its own (a Ray Train trial's controller runs in it: "
              "each imports Ray Train's controller again). Processes per trial: the Python worker processes "
              f"Ray's raylet logged starting in the sweep of {TRIALS} less the sweep of 1, over {TRIALS - 1} (a trial reuses "
              "the process of the one before: Tune's reuse_actors; a Ray Train trial also starts its Train worker and "
              "Train's sync actor afresh, each a new Python process that imports what it runs, while its controller runs "
              "in the trial's process, ray_compat.run_controller_in_process). Where a sweep's time goes (seconds, from when its console lines were printed; "
              "the trials' span includes the first trial's process start and imports):", "",
              "| sweep | " + " | ".join(next(iter(sweeps.values()))[1]) + " |", "|---|---|---|---|---|"]
    lines += [f"| {row}, {n} trial(s) | " + " | ".join(f"{v:.1f}" for v in sweeps[row, n][1].values()) + " |"
              for row, *_ in ROWS for n in (1, TRIALS)]
    if imports is not None:
        lines += trial_phase_lines(sweeps["ray_train", TRIALS][3], warm, imports)
    lines += ["", "Shared preparation (tokenise + encode + Word2Vec) per trial of a sweep:", "",
              "| trial | seconds |", "|---|---|", f"| 1 (builds) | {prep[0]:.2f} |"]
    return lines + [f"| {i} (cache hit) | {p:.2f} |" for i, p in enumerate(prep[1:], start=2)]


def trial_phase_lines(runs: list[dict[str, float]], warm: float, imports: dict[str, list[float]]) -> list[str]:
    """Where a Ray Train trial's time goes (TRIAL_PHASES), and what its new processes import."""
    found = trial_phases(runs)
    lines = ["", f"Where a Ray Train trial's time goes, in the median run of the ray_train sweep of {TRIALS}: from Ray Train's "
             "own log of each run (its controller's, which the trial's process writes run after run); every phase the "
             f"median over the {len(runs) - 1} spans from one trial's start to the next's:", "",
             "| phase | what happens in it | seconds |", "|---|---|---|"]
    lines += [f"| {MOMENTS[a]} → {MOMENTS[b]} | {what} | {found[a, b]:.2f} |" for (a, b), what in TRIAL_PHASES.items()]
    lines += [f"| one trial, all phases | | {sum(found.values()):.2f} |",
              f"| one warm `train()` call in a plain process | | {warm:.2f} |", "",
              "What the worker's new process imports, in a fresh process on this machine after `import ray` (median of 3): " +
              "; ".join(f"{who}: " + ", then ".join(f"{module} {seconds:.2f} s" for module, seconds in zip(IMPORTS[who], found_s))
                        for who, found_s in imports.items()) + "."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plain", type=int, help=argparse.SUPPRESS)  # the plain process this script times
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        return plain_process(args.cache, args.plain)
    work = Path(tempfile.mkdtemp(prefix="imdb_ray_bench_"))
    cache = str(work / "cache")
    prep = prepare(cache)
    runs: dict = {}
    for repeat in range(REPEATS):  # alternating, so a slow spell of the machine touches every kind alike
        for n in (1, TRIALS):
            runs.setdefault(("plain", n), []).append(timed_plain(cache, n))
            for i, (row, trainer, defaults, reuse) in enumerate(ROWS):
                runs.setdefault((row, n), []).append(timed_sweep(work / f"row{i}_{repeat}", cache, trainer, n,
                                                                 ray_defaults() if defaults else None, reuse))
    plain = {n: median_run(runs["plain", n]) for n in (1, TRIALS)}
    sweeps = {key: median_run(found) for key, found in runs.items() if key[0] != "plain"}
    imports = {who: import_seconds(modules) for who, modules in IMPORTS.items()}
    lines = report(plain, sweeps, prep, {trainer: per_sweep_by_round(runs, trainer) for trainer in ("auto", "auto, Ray's defaults")},
                   imports)
    (ROOT / "results" / "sweep_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
