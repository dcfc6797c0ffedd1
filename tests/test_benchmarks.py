"""Benchmark scripts' own logic (their measurements live in results/, never in tests)."""
from __future__ import annotations

import importlib.util

import pytest

from helpers import ROOT


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_classic_recipes_resume_keeps_measured_rows_on_the_same_device_only(tmp_path):
    """--resume spreads the ~10 h CPU study over sessions: rows measured before are kept (failed ones run
    again), and a table is never mixed across devices."""
    recipes = load("classic_recipes")
    saved = tmp_path / "classic_recipes.json"
    assert recipes.load_done(saved, "CPU (2 cores)") == {}
    row = {"val": 0.88, "test": 0.87, "best_epoch": 3, "epochs": 5, "epoch_s": 100.0, "wall_s": 600.0}
    recipes.save_done(saved, "CPU (2 cores)", {("gru", "base"): row, ("gru", "embed 300"): {"error": "MemoryError: x"}})
    assert recipes.load_done(saved, "CPU (2 cores)") == {("gru", "base"): row}
    with pytest.raises(SystemExit, match="one table, one device"):
        recipes.load_done(saved, "NVIDIA H200")
    saved.write_text("{not json")  # a damaged file: one line saying what to do, no traceback
    with pytest.raises(SystemExit, match="not a table this script wrote"):
        recipes.load_done(saved, "CPU (2 cores)")
    assert ("gru", "base") in {(m, r) for m, r, _ in recipes.rows()}  # the keys are the rows' own


def test_classic_recipes_runs_the_rows_left_of_the_models_asked_for():
    recipes = load("classic_recipes")
    done = {("cnn", "base"): {"val": 0.88}}
    todo = recipes.pending(done, "cnn")
    assert todo and {m for m, _, _ in todo} == {"cnn"} and ("cnn", "base") not in {(m, r) for m, r, _ in todo}
    assert [r for _, r, _ in todo] == [r for m, r, _ in recipes.rows() if m == "cnn" and r != "base"]  # the study's order
    assert len(recipes.pending({}, None)) == len(recipes.rows())
    with pytest.raises(SystemExit, match="--models: bert not in this study; its models: gru, lstm, cnn"):
        recipes.pending({}, "cnn,bert")


def test_classic_recipes_budget_begins_no_row_after_it_and_finishes_the_row_running(tmp_path):
    """--budget-s is a session's: the row that began inside it runs to its end and is kept (no process is left
    training unrecorded), the rest wait for --resume."""
    import json
    import subprocess
    import sys

    out = tmp_path / "recipes.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "classic_recipes.py"), "--smoke", "--models", "cnn",
                           "--budget-s", "1", "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cnn / base: {'val'" in proc.stdout and "budget of 1s spent: 6 row(s) not begun" in proc.stdout
    assert "cnn / base: begun (6 row(s) after it)" in proc.stdout  # a row's minutes show as they pass:
    assert "cnn / base: epoch 1/1 val_accuracy" in proc.stdout  # its start, then each epoch from its process
    saved = out.with_suffix(".json")
    assert list(load("classic_recipes").load_done(saved, json.loads(saved.read_text())["device"])) == [("cnn", "base")]


def test_suite_cpu_sums_each_process_by_its_role():
    """benchmarks/suite_cpu.py: Ray's process titles, our CLI commands and the rest, each to its role; the
    sampler counts a process started while it runs, and only that process's own CPU time."""
    import subprocess
    import sys

    suite = load("suite_cpu")
    assert suite.role("ray::DirectTrial.train") == "ray::DirectTrial" and suite.role("ray::IDLE") == "ray::IDLE"
    assert suite.role("python -m imdb_ray sweep s.py --address x") == "imdb_ray sweep (sweep drivers)"
    assert suite.role("/venv/bin/python default_worker.py --raylet-name=x") == "Ray worker (starting)"
    assert suite.role("/ray/core/src/ray/raylet/raylet --x") == "Ray daemons" and suite.role("") is None
    sampler = suite.Sampler(interval=0.1)
    sampler.start()
    busy = subprocess.run([sys.executable, "-c", "import time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\n"
                           "time.sleep(0.5)"], check=True)
    sampler.stop.set()
    sampler.join()
    seconds, count = sampler.by_role()["other"]
    assert busy.returncode == 0 and count >= 1 and 0.8 <= seconds


def test_a_replay_through_the_real_tuner_is_deterministic_for_its_seed(tmp_path, ray_address):
    """benchmarks/search_efficiency.py: the real Tuner, searcher and scheduler over a small part of the committed
    curve table (8 configs, 2 families, their first 400 reviews) give the same incumbents twice for one seed, and
    every budget's incumbent is a config the table holds."""
    import ray

    efficiency, record = load("search_efficiency"), load("search_record")
    keep = {"model": ("cnn", "gru"), "lr": (3e-4, 1e-3), "dropout": (0.2,), "freeze_embeddings": (False,)}
    rows = record.excerpt(record.load_table(), keep, reviews=400)
    assert len(rows) == 8 and {len(r["epochs"]) for r in rows} == {record.DATA["epochs"]}
    g = efficiency.grid(rows)
    space = efficiency.sweep_space(rows)
    light = {k: [{"val_accuracy": e["val_accuracy"], "seconds": e["seconds"]} for e in r["epochs"]] for k, r in g["curves"].items()}
    ray.init(address=ray_address, ignore_reinit_error=True)
    try:
        method = efficiency.Method("optuna + asha", "optuna", "asha")
        first, second = (efficiency.replay(light, space, method, 7, str(tmp_path / f"r{i}")) for i in (1, 2))
    finally:
        ray.shutdown()
    budgets = [f * g["seconds"] for f in efficiency.FRACTIONS]
    assert first == second and efficiency.incumbents(first, budgets, "seconds") == efficiency.incumbents(second, budgets, "seconds")
    assert len({a["key"] for a in first}) == len(g["curves"]) and set(a["key"] for a in first) <= set(g["curves"])
    assert len(first) < g["epochs"]  # ASHA stopped some trials early
    regrets = [s["regret"] for s in efficiency.score(g, first, "seconds") if s["regret"] is not None]
    assert regrets and all(r >= 0 for r in regrets) and regrets == sorted(regrets, reverse=True)  # a kept best only improves


def test_classic_before_after_reads_both_committed_records_per_model():
    """The before/after table of the classic sweep: a trial the budget stopped before its first epoch has no
    validation score and never becomes its model's best; both records parse (trials, confirmed configs)."""
    compare = load("classic_before_after")
    rows = [{"model": "cnn", "val_accuracy": "", "epochs": "0"}, {"model": "cnn", "val_accuracy": "0.88", "epochs": "3"},
            {"model": "gru", "val_accuracy": "0.85", "epochs": ""}]
    best = compare.best_per_model(rows)
    assert best["cnn"]["best"]["val_accuracy"] == "0.88" and (best["cnn"]["trials"], best["cnn"]["epochs"]) == (2, 3)
    assert (best["gru"]["trials"], best["gru"]["epochs"]) == (1, 0)
    after = compare.record(None)  # the record in the tree
    assert after["trials"] and after["confirmed"] and all(len(c) == 4 for c in after["confirmed"])
    assert {"cnn", "nbsvm"} <= {r["model"] for r in after["trials"]}


def test_sweep_overhead_derives_per_trial_and_per_sweep_costs_and_process_counts(tmp_path):
    """benchmarks/sweep_overhead.py: its two formulas and Ray's process count, on numbers made up here."""
    bench = load("sweep_overhead")
    logs = tmp_path / "ray" / "session_x" / "logs"
    logs.mkdir(parents=True)
    (logs / "raylet.out").write_text("worker_pool.cc:564: Started worker process with pid 1\nother\n"
                                     "worker_pool.cc:564: Started worker process with pid 2\n")
    assert bench.worker_processes(tmp_path) == 2
    n = bench.TRIALS
    plain = {1: (6.0, [2.0]), n: (6.0 + 2.0 * (n - 1) + 2.0, [2.0] * n)}  # warm plain trial: 2.0 s

    def phases(trials_span):
        return {"before Ray": 1.0, "Ray start": 1.0, "trials": trials_span, "close": 1.0}

    sweeps = {}
    for trainer, extra, procs in (("auto", 0.5, 0), ("auto, Ray's defaults", 0.5, 0), ("ray_train", 10.0, 8),
                                  ("ray_train, no process reuse", 12.0, 9), ("ray_train, Ray's defaults", 11.0, 9)):
        sweeps[trainer, 1] = (20.0, phases(5.0), 3, [])
        sweeps[trainer, n] = (20.0 + (2.0 + extra) * (n - 1), phases(5.0 + (2.0 + extra) * (n - 1)), 3 + procs * (n - 1), [])
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in bench.report(plain, sweeps, [6.0, 0.1]) if line.startswith("| ")}
    auto, ray_train = rows["auto"], rows["ray_train"]
    assert auto[4:7] == ["+0.50", f"{20.0 + 2.5 * (n - 1) - plain[n][0] - n * 0.5:+.1f}", "0.0 |"]
    assert ray_train[4] == "+10.00" and ray_train[6] == "8.0 |"
    assert rows["ray_train, no process reuse"][4] == "+12.00" and rows["ray_train, no process reuse"][6] == "9.0 |"
    phase_rows = [line.split(" | ")[0].lstrip("| ") for line in bench.report(plain, sweeps, [6.0, 0.1]) if " trial(s) | " in line]
    assert phase_rows[:3] == ["auto, 1 trial(s)", f"auto, {n} trial(s)", "auto, Ray's defaults, 1 trial(s)"]  # the rows' order
    # per round: each round's plain process and sweeps alone (round 2's plain process 3 s slower: its per sweep 3 s less)
    slow_plain = (plain[n][0] + 3.0, plain[n][1])
    runs = {("plain", n): [plain[n], slow_plain], ("auto", 1): [sweeps["auto", 1]] * 2, ("auto", n): [sweeps["auto", n]] * 2}
    first, second = bench.per_sweep_by_round(runs)
    assert f"{first:+.1f}" == auto[5] and second == pytest.approx(first - 3.0)
    by_round = {"auto": [first, second], "auto, Ray's defaults": [second, first]}
    assert any(line.startswith("The auto sweeps' fixed cost per sweep computed within each of the 2") and
               f"auto: {first:+.1f}, {second:+.1f}; auto, Ray's defaults: {second:+.1f}, {first:+.1f} s" in line
               for line in bench.report(plain, sweeps, [6.0, 0.1], by_round))


def test_sweep_overhead_reads_each_ray_train_runs_phases_from_rays_own_logs(tmp_path):
    """The Ray Train trial's phases: from the controller's log (Ray 2.60's words), which a trial's process writes run
    after run (a run starts with the line after the last one's "Shutting down"), each phase the median over consecutive
    runs, the next run's start closing a run's last phase."""
    import json

    bench = load("sweep_overhead")
    logs = tmp_path / "session_x" / "logs" / "train"
    logs.mkdir(parents=True)
    words = {"ready": "Requesting resources: {'CPU': 1} * 1", "created": "[Worker Group Initialization] 1 worker actors created in 1.4s.",
             "launched": "[Worker Group Initialization] Train function launched on workers in 0.01s.", "done": "Shutting down 1 workers."}
    records = {"01ab": [], "02cd": []}  # two trial processes: runs 0 and 1 in the first, run 2 in the second
    for run, (start, step) in enumerate([(0, 1.0), (10, 1.0), (19, 2.0)]):  # runs start at 0, 10 and 19 s
        first = "Changing the working directory to: /tmp/x" if run == 1 else "No checkpoint manager snapshot found."
        records["01ab" if run < 2 else "02cd"] += [
            {"asctime": f"2026-12-05 10:00:{start:02d},000", "message": first},
            *({"asctime": f"2026-12-05 10:00:{start + step * (i + 1):02.0f},500", "message": text} for i, text in enumerate(words.values())),
            {"asctime": f"2026-12-05 10:00:{start + 5:02d},000", "message": "Shutting down 1 workers."}]  # a later twin
    for worker_id, lines in records.items():
        (logs / f"ray-train-sys-controller-{worker_id}.log").write_text("\n".join(map(json.dumps, lines)))
    runs = bench.train_runs(tmp_path)
    assert [run["start"] - runs[0]["start"] for run in runs] == [0, 10, 19]
    assert runs[0]["ready"] - runs[0]["start"] == pytest.approx(1.5) and runs[2]["done"] - runs[2]["start"] == pytest.approx(8.5)
    found = bench.trial_phases(runs)  # two spans (runs 0 and 1, both 1 s steps): run 0 ends 10 - 4.5, run 1 ends 9 - 4.5
    assert found["start", "ready"] == pytest.approx(1.5) and found["ready", "created"] == pytest.approx(1.0)
    assert found["done", "next"] == pytest.approx((5.5 + 4.5) / 2)
    lines = bench.trial_phase_lines(runs, 2.0, {who: [0.5] * len(modules) for who, modules in bench.IMPORTS.items()})
    assert f"| one trial, all phases | | {sum(found.values()):.2f} |" in lines and "ray.train.torch 0.50 s" in lines[-1]


def test_the_dry_runs_fixed_costs_are_the_recorded_ones():
    """imdb_ray/sweep/cost.py's fixed costs are results/sweep_overhead.md's rows (auto: per trial and per sweep;
    ray_train: per trial), so a new record of the benchmark cannot leave the dry run's estimate on the old one."""
    from imdb_ray.sweep import cost

    text = (ROOT / "results" / "sweep_overhead.md").read_text()
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip().strip("|").split("|")]
                                          for line in text.splitlines() if line.startswith("| "))}
    assert max(0.0, float(rows["auto"][4])) == pytest.approx(cost.TRIAL_FIXED_S["direct"], abs=0.005)
    assert float(rows["auto"][5]) == pytest.approx(cost.SWEEP_FIXED_S, abs=0.05)
    assert max(0.0, float(rows["ray_train"][4])) == pytest.approx(cost.TRIAL_FIXED_S["ray_train"], abs=0.005)


def test_every_results_file_is_indexed_with_a_command_that_exists():
    """results/README.md is the index of results/: every file there has a row, and every script a row names
    exists, so a renamed benchmark or a finished record cannot leave the index behind."""
    import re

    index = (ROOT / "results" / "README.md").read_text()
    rows = [line for line in index.splitlines() if line.startswith("| `")]
    named = set(re.findall(r"`([\w.-]+\.(?:md|csv|json|png|jsonl\.gz))`", "\n".join(rows)))
    files = {p.name for p in (ROOT / "results").iterdir() if p.is_file() and p.name != "README.md"}
    assert files - named == set(), "results files without a row in results/README.md"
    for script in set(re.findall(r"benchmarks/(\w+\.py)", "\n".join(rows))):
        assert (ROOT / "benchmarks" / script).is_file(), script
    assert all(line.rstrip().endswith("|") and line.count(" | ") >= 2 for line in rows)  # file | what | command


def test_record_sweep_timeline_splits_the_wall_time_by_stage_from_the_mlflow_runs(tmp_path):
    """A search of 3 trials on 2 slots (one slot idle at its end), then a confirmation of 2 side by side:
    the record says how long each stage took beside the seconds its trials ran, and what came before,
    between and after."""
    from mlflow import MlflowClient

    from helpers import fresh_store

    record_sweep = load("record_sweep")
    uri, t0 = fresh_store(tmp_path), 1_800_000_000.0
    client = MlflowClient(uri)
    exp = client.create_experiment("demo")
    parent = client.create_run(exp, tags={"imdb_ray.kind": "sweep"}, start_time=int((t0 + 5) * 1e3)).info.run_id
    client.log_param(parent, "concurrency", 2)
    for begin, end, stage in [(10, 30, None), (10, 20, None), (20, 50, None), (55, 75, "confirm"), (55, 75, "confirm")]:
        tags = {"mlflow.parentRunId": parent, **({"imdb_ray.stage": stage} if stage else {})}
        run = client.create_run(exp, tags=tags, start_time=int((t0 + begin) * 1e3)).info.run_id
        client.set_terminated(run, end_time=int((t0 + end) * 1e3))
    line = record_sweep.timeline(uri, "demo", t0, t0 + 80)
    assert "before the first trial (imports, checks, shared data, Ray start, MLflow parent) 10 s" in line
    assert "search 40 s (3 trials, 60 trial-seconds: 75% of 2 slot(s) busy)" in line
    assert "between the stages (test evaluation of the best trials, the next Tuner) 5 s" in line
    assert "confirmation 20 s (2 trials, 40 trial-seconds: 100% of 2 slot(s) busy)" in line
    assert "after the last trial (test evaluation, registration, Ray stop) 5 s" in line
    assert "100 trial-seconds in all" in line


def test_the_readme_retells_the_quickstart_record_it_links():
    """README's sentence on the dry run's estimate for sweeps/quickstart.py carries results/quickstart_cpu.md's
    figures (estimate, slow end, wall time, CPU-hours), so a new record cannot leave the README on the old one."""
    import re

    record = (ROOT / "results" / "quickstart_cpu.md").read_text()
    wall_s = int(re.search(r"confirmation reruns\): \*\*(\d+) s\*\*", record)[1])
    cpu_h, wall_m, slow_cpu_h, slow_m = re.search(r"([\d.]+) CPU-hours, ~([\d.]+)m wall at \d+ trial\(s\) at once; "
                                                  r"up to ([\d.]+) CPU-hours, ~([\d.]+)m wall", record).groups()
    ran_cpu_h = re.search(r"\(([\d.]+) CPU-hours\)", record)[1]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (f"estimated {wall_m} min, up to {slow_m} min, and the sweep took {wall_s / 60:.1f} min" in readme)
    assert f"the trials ran {ran_cpu_h} CPU-hours against {cpu_h} estimated, {slow_cpu_h} at the slow end" in readme


def test_the_docs_retell_the_overhead_record_they_link():
    """README's and docs/cluster.md's fixed costs (per auto, Ray Train and no-reuse trial; per sweep, with its rounds)
    are results/sweep_overhead.md's, so a new record of the benchmark cannot leave the prose on the old one."""
    import re

    record = (ROOT / "results" / "sweep_overhead.md").read_text()
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip().strip("|").split("|")]
                                          for line in record.splitlines() if line.startswith("| "))}
    auto, ray_train, no_reuse = (float(rows[name][4]) for name in ("auto", "ray_train", "ray_train, no process reuse"))
    per_sweep = float(rows["auto"][5])
    rounds = [float(r) for r in re.search(r"auto: ([-+\d., ]+);", record)[1].split(",")]
    readme, cluster = (" ".join((ROOT / path).read_text().split()) for path in ("README.md", "docs/cluster.md"))
    for phrase in (f"({auto:+.1f} s per trial", f"{ray_train:+.1f} s on Ray Train", f"{no_reuse:+.1f} s without reusing",
                   f"{per_sweep:+.1f} s once per sweep (its three rounds {min(rounds):+.1f} to {max(rounds):+.1f} s)"):
        assert phrase in readme, phrase
    for phrase in (f"{auto:+.1f} s per `auto` trial", f"{ray_train:+.1f} s per Ray Train trial",
                   f"{per_sweep:+.1f} s once per sweep (its rounds: {', '.join(f'{r:+.1f}' for r in rounds[:-1])} and "
                   f"{rounds[-1]:+.1f} s", f"{no_reuse:+.1f} s per trial and 3 new processes", f"is met here ({ray_train:+.1f} s)"):
        assert phrase in cluster, phrase


def test_every_benchmark_answers_help_without_running():
    """`benchmarks/X.py --help` prints what the script measures and exits 0: it starts no measurement (minutes, and
    a rewritten record under results/) for a user who only asked what it does. All scripts at once, in subprocesses."""
    import contextlib
    import hashlib
    import os
    import signal
    import subprocess
    import sys

    def results_digest() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (ROOT / "results").iterdir() if p.is_file()}

    before = results_digest()
    # the scripts (search_record.py and search_replay.py are modules search_efficiency.py imports)
    scripts = [s for s in sorted((ROOT / "benchmarks").glob("*.py")) if '__name__ == "__main__"' in s.read_text()]
    assert len(scripts) >= 20
    procs = {s.name: subprocess.Popen([sys.executable, str(s), "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, cwd=ROOT, start_new_session=True) for s in scripts}
    try:
        outputs = {name: (p.communicate(timeout=120)[0], p.returncode) for name, p in procs.items()}
    finally:  # a script that started measuring anyway: it and what it started (sweeps, Ray) end with the test
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
    assert {name: code for name, (_, code) in outputs.items() if code != 0} == {}, outputs
    assert all(len(out.strip().splitlines()) >= 2 for out, _ in outputs.values()), outputs
    assert results_digest() == before
