"""Where `make test`'s time goes: the suite run as `make test` runs it, while every process on the
machine is sampled for CPU time, summed by role (pytest workers, sweep drivers, Ray trial and Train
processes, Ray's daemons, MLflow servers, CLI commands). pytest --durations gives wall time per test;
this gives CPU-seconds per kind of process, which is what a CPU-bound suite's wall time is made of.

    .venv/bin/python benchmarks/suite_cpu.py [--out results/suite_cpu.md] [-- extra pytest args]
"""
from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
# cmdline fragment -> role; the first match wins (a Ray worker's cmdline names the raylet, so it comes first)
ROLES = [("default_worker.py", "Ray worker (starting)"), ("raylet", "Ray daemons"), ("gcs_server", "Ray daemons"),
         ("dashboard", "Ray daemons"), ("log_monitor", "Ray daemons"), ("monitor.py", "Ray daemons"),
         ("runtime_env", "Ray daemons"), ("mlflow", "MLflow servers"), ("chrom", "Chromium (UI test)"),
         ("exec(eval(sys.stdin", "pytest workers (in-process tests)"), ("pytest", "pytest workers (in-process tests)")]


def role(cmdline: str) -> str | None:
    if cmdline.startswith("ray::"):  # Ray's process titles: ray::DirectTrial, ray::RayTrainWorker, ...
        name = cmdline.split()[0].split(".")[0]
        return "Ray daemons" if name in ("ray::DashboardAgent", "ray::RuntimeEnvAgent") else name
    if m := re.search(r"-m imdb_ray (\w+)", cmdline):
        return f"imdb_ray {m.group(1)}" + (" (sweep drivers)" if m.group(1) == "sweep" else "")
    return next((r for key, r in ROLES if key in cmdline), "other" if cmdline else None)


class Sampler(threading.Thread):
    """CPU seconds of every process, by role, counted from when sampling starts (a process's role is its
    last title: a Ray worker takes the title of the actor it becomes)."""

    def __init__(self, interval: float = 0.3):
        super().__init__(daemon=True)
        self.interval, self.stop, self.first, self.last, self.roles = interval, threading.Event(), {}, {}, {}

    def run(self) -> None:
        me, first_pass = os.getpid(), True
        while not self.stop.is_set():
            for p in psutil.process_iter():
                try:
                    if p.pid == me:
                        continue
                    key, times = (p.pid, p.create_time()), p.cpu_times()
                    # running before sampling began: only what it uses from now on counts
                    self.first.setdefault(key, times.user + times.system if first_pass else 0.0)
                    self.last[key] = times.user + times.system
                    if (r := role(" ".join(p.cmdline()))) and (r != "Ray worker (starting)" or key not in self.roles):
                        self.roles[key] = r
                except (psutil.Error, OSError):
                    pass
            first_pass = False
            self.stop.wait(self.interval)

    def by_role(self) -> dict[str, tuple[float, int]]:
        seconds, count = collections.Counter(), collections.Counter()
        for key, value in self.last.items():
            name = self.roles.get(key, "other")
            seconds[name] += value - self.first[key]
            count[name] += 1
        return {name: (seconds[name], count[name]) for name, _ in seconds.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "suite_cpu.md"))
    parser.add_argument("--workers", default=os.environ.get("TEST_WORKERS", "2"))
    args, extra = parser.parse_known_args()
    command = [sys.executable, "-m", "pytest", "-q", "-n", args.workers, *[a for a in extra if a != "--"]]
    sampler = Sampler()
    sampler.start()
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    summary = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    rows = sampler.by_role()
    total = sum(s for s, _ in rows.values())
    lines = [f"# Where the test suite's time goes ({time.strftime('%Y-%m-%d')})", "",
             f"`{' '.join(['python', *command[1:]])}` on {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
             f"produced by `.venv/bin/python benchmarks/suite_cpu.py`.", "",
             f"- pytest: {summary}", f"- wall: {wall:.0f} s; CPU of every process on the machine: {total:.0f} s, "
             f"that is {total / wall:.2f} of {os.cpu_count()} cores busy on average", "",
             "| processes | CPU s | share | count |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {sec:.0f} | {sec / total:.0%} | {n} |" for name, (sec, n) in rows.items() if sec >= 0.5]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
