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


def small_table(path) -> list[dict]:
    """A synthetic 3-epoch curve table in the recorder's format: 2 models x 3 learning rates."""
    import base64
    import gzip
    import json

    import numpy as np

    rng, rows = np.random.default_rng(0), []
    labels = rng.integers(0, 2, 40)
    for model, width in (("gru", "hidden"), ("cnn", "num_filters")):
        for lr in (1e-3, 3e-3, 1e-2):
            epochs = []
            for epoch in (1, 2, 3):
                probs = np.clip(labels * 0.6 + rng.normal(0.2, 0.25, 40), 0, 1)
                right = (probs >= 0.5) == labels
                epochs.append({"epoch": epoch, "val_accuracy": float(right.mean()), "seconds": float(rng.uniform(1, 3)),
                               "test_accuracy": float(rng.uniform(0.7, 0.9)),
                               "val_probs": base64.b64encode(np.round(probs * 255).astype(np.uint8).tobytes()).decode(),
                               "test_right": base64.b64encode(np.packbits(right).tobytes()).decode()})
            rows.append({"config": {"model": model, "lr": lr, width: 16}, "seed": 0, "epochs": epochs, "n_val": 40, "n_test": 40,
                         "val_labels": "".join(map(str, labels.tolist()))})
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_a_replay_through_the_real_tuner_is_deterministic_for_its_seed(tmp_path, ray_address):
    """benchmarks/search_efficiency.py: the real Tuner, searcher and scheduler over a recorded table give the same
    incumbents twice for one seed, and every budget's incumbent is a config the table holds."""
    import ray

    efficiency = load("search_efficiency")
    small_table(tmp_path / "t.jsonl.gz")
    rows = efficiency.load_table(tmp_path / "t.jsonl.gz")
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
