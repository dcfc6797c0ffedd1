"""Sweep files are validated completely before Ray starts: one line naming the file, exit code 2."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray import tune

from helpers import cli
from imdb_ray.errors import UserError
from imdb_ray.sweep import Sweep, load_sweep

ROOT = Path(__file__).resolve().parent.parent
HEADER = "from ray import tune\nfrom imdb_ray.sweep import Sweep\n"


def test_shipped_sweeps_validate():
    for name in ("quickstart", "smoke", "classic", "gru_lr", "pretrained", "peft", "peft_cpu", "strategies", "strategies_cpu", "cluster_sim"):
        sweep = load_sweep(ROOT / "sweeps" / f"{name}.py")
        assert sweep.name == name and sweep.space


BAD = [
    ("syntax", "sweep = Sweep(name='x', space={'model': 'gru',)\n", "syntax error"),
    ("no_sweep", "x = 1\n", "define `sweep = Sweep(...)`"),
    # an error while the file runs names its line (the header is lines 1-2), and a misspelt setting its nearest
    ("raises_at_line", "import os\nx = {}['missing']\n", "raises_at_line.py:4: KeyError while loading: 'missing'"),
    ("misspelt_setting", "sweep = Sweep(name='x', space={'model': 'gru'},\n              num_sample=3)\n",
     "misspelt_setting.py:3: TypeError while loading: Sweep.__init__() got an unexpected keyword argument 'num_sample'; "
     "did you mean num_samples"),
    ("empty_space", "sweep = Sweep(name='x', space={})\n", "search space is empty"),
    ("unknown_model", "sweep = Sweep(name='x', space={'model': tune.choice(['gru', 'bert-huge'])})\n", "unknown model 'bert-huge'"),
    ("unknown_param", "sweep = Sweep(name='x', space={'model': 'gru', 'kernel_sizes': (3,)})\n", "space['kernel_sizes']: no model"),
    ("out_of_range", "sweep = Sweep(name='x', space={'model': 'gru', 'lr': tune.uniform(-1.0, 0.1)})\n", "lr=-1.0 must be a number > 0"),
    ("empty_choice", "sweep = Sweep(name='x', space={'model': 'gru', 'lr': tune.choice([])})\n", "empty choice"),
    ("bad_scheduler", "sweep = Sweep(name='x', space={'model': 'gru'}, scheduler='hyperband2')\n", "scheduler='hyperband2'"),
    ("bad_search", "sweep = Sweep(name='x', space={'model': 'gru'}, search='bayes')\n", "search='bayes'"),
    ("grid_with_optuna", "sweep = Sweep(name='x', space={'model': 'gru', 'lr': tune.grid_search([1e-3])})\n", "needs search='grid'"),
    ("test_metric", "sweep = Sweep(name='x', space={'model': 'gru'}, metric='test_accuracy')\n", "metric='test_accuracy' must be one of val_accuracy, val_f1, val_loss"),
    ("bad_test_each", "sweep = Sweep(name='x', space={'model': 'gru'}, test_each='modle')\n", "test_each='modle' is not a key"),
    # Ranges and choices of model parameters and settings (issue: they once surfaced only when a trial built its model)
    ("bad_choice", "sweep = Sweep(name='x', space={'model': 'gru', 'pooling': 'maxx'})\n", "pooling='maxx' must be one of last, mean, max"),
    ("dropout_range", "sweep = Sweep(name='x', space={'model': 'cnn', 'dropout': tune.uniform(0.1, 1.5)})\n",
     "value 1.5: dropout=1.5 must be a number in [0, 1)"),
    ("hidden_zero", "sweep = Sweep(name='x', space={'model': 'gru', 'hidden': 0})\n", "hidden=0 must be an integer > 0"),
    ("layers_negative", "sweep = Sweep(name='x', space={'model': 'gru', 'layers': tune.randint(-1, 3)})\n", "layers=-1 must be an integer > 0"),
    ("branch_choice", "sweep = Sweep(name='x', space={'model': {'cnn': {}, 'gru': {'hidden': tune.choice([64, -8])}}})\n",
     "space['model']['gru']['hidden'] value -8 (gru): hidden=-8 must be an integer > 0"),
    ("kernel_zero", "sweep = Sweep(name='x', space={'model': 'cnn', 'kernel_sizes': tune.choice([(3, 4), (0, 3)])})\n",
     "kernel_sizes=(0, 3) must be a list of integers > 0"),
    ("grid_value", "sweep = Sweep(name='x', space={'model': 'cnn', 'num_filters': tune.grid_search([8, 0])}, search='grid')\n",
     "num_filters=0 must be an integer > 0"),
    ("reversed_bounds", "sweep = Sweep(name='x', space={'model': 'gru', 'lr': tune.loguniform(1e-2, 1e-4)})\n",
     "space['lr']: tune.loguniform(0.01, 0.0001) has its lower bound above its upper; swap them"),
    ("sample_from", "sweep = Sweep(name='x', space={'model': 'gru', 'lr': tune.sample_from(lambda c: 0.01)})\n",
     "space['lr']: tune.sample_from cannot be checked before the sweep starts"),
    ("randn", "sweep = Sweep(name='x', space={'model': 'gru', 'lr': tune.randn(0.01, 0.001)})\n",
     "space['lr']: tune.randn draws unbounded values"),
    ("mode_contradicts", "sweep = Sweep(name='x', space={'model': 'gru'}, metric='val_loss', mode='max')\n",
     "mode='max' contradicts metric='val_loss'"),
    ("setting_range", "sweep = Sweep(name='x', space={'model': 'gru'}, reduction_factor=1)\n", "reduction_factor=1 must be an integer >= 2"),
    ("setting_choice", "sweep = Sweep(name='x', space={'model': 'gru'}, trainer='horovod')\n",
     "trainer='horovod' must be one of auto, ray_train, direct"),
]


@pytest.mark.parametrize("name, body, message", BAD, ids=[b[0] for b in BAD])
def test_bad_sweep_files(tmp_path, name, body, message):
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + body)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")) as err:
        load_sweep(path)
    assert str(path) in str(err.value)


def test_missing_sweep_file():
    with pytest.raises(UserError, match="sweep file not found"):
        load_sweep("/nonexistent/sweep.py")


def test_resources_the_cluster_can_never_satisfy():
    sweep = Sweep(name="x", space={"model": "gru"}, gpus_per_worker=1, trainer="ray_train")
    with pytest.raises(UserError, match="one trial needs 1.01 CPU and 1 GPU; the cluster has 2 CPU and 0 GPU"):
        sweep.concurrency({"CPU": 2})


def test_concurrency_leaves_room_for_train_workers():
    """2 CPUs, Train workers of 0.95 CPU: two trials fit, and never more than the CPUs allow."""
    assert Sweep(name="x", space={"model": "gru"}, cpus_per_worker=0.95, trainer="ray_train").concurrency({"CPU": 2}) == 2
    assert Sweep(name="x", space={"model": "gru"}, cpus_per_worker=1, trainer="ray_train").concurrency({"CPU": 2}) == 1
    assert Sweep(name="x", space={"model": "gru"}, cpus_per_worker=1).concurrency({"CPU": 2}) == 2  # auto: direct, no sliver
    assert Sweep(name="x", space={"model": "gru"}, workers_per_trial=2, cpus_per_worker=0.95).concurrency({"CPU": 2}) == 1
    assert Sweep(name="x", space={"model": "gru"}, trainer="direct", gpus_per_worker=0.25,
                 num_samples=16).concurrency({"CPU": 16, "GPU": 2}) == 8


def test_gpu_fractions_pack_per_gpu():
    """Ray places a fraction within one GPU: 0.3 fits three times on each (not 8 / 0.3 = 26 on eight)."""
    def fits(fraction, gpus, workers=1):
        return Sweep(name="x", space={"model": "gru"}, trainer="direct", gpus_per_worker=fraction, workers_per_trial=workers,
                     num_samples=100, cpus_per_worker=0.1).concurrency({"CPU": 64, "GPU": gpus})

    assert fits(0.3, 8) == 24 and fits(0.25, 2) == 8 and fits(0.5, 3) == 6 and fits(1, 8) == 8 and fits(2, 8) == 4
    assert fits(0.3, 8, workers=2) == 12


@pytest.mark.parametrize("argv, message", [
    (["sweep", "sweeps/nope.py"], "sweep file not found"),
    (["sweep", "sweeps/smoke.py", "--storage", "relative/dir"], "must be absolute"),
    (["sweep", "sweeps/smoke.py", "--address", "nowhere"], "--address 'nowhere'"),
    (["sweep", "sweeps/smoke.py", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_sweep_cli_errors(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, err, _ = cli(argv, capsys)
    assert code == 2
    assert len(err) == 1 and message in err[0], err


def test_sweep_cli_error_from_the_entry_point():
    """`python -m imdb_ray` itself: exit 2 and one line on stderr, with nothing else (no library
    logging) printed when the tracking store is checked and refused."""
    argv = ["sweep", "sweeps/smoke.py", "--storage", "/tmp/imdb_ray_unreachable", "--tracking-uri", "http://127.0.0.1:9"]
    proc = subprocess.run([sys.executable, "-m", "imdb_ray", *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "MLflow tracking store http://127.0.0.1:9 is not reachable" in lines[0], proc.stderr


def test_the_sqlite_store_is_opened_while_ray_starts(monkeypatch, tmp_path):
    """An existing sqlite store is checked and opened in a thread beside Ray's start (Ray mostly waits on its
    processes; the store is imports and SQL); a file that is no MLflow store is refused in one line before Ray
    starts (a quick read-only look at its tables). A new file gets its tables there too, but after joining a
    cluster: its resources are checked then, and a refusal must leave no empty store. A server is asked before
    anything starts (test_reliability.py)."""
    import threading

    import ray

    from helpers import fresh_store
    from imdb_ray.sweep import runner

    events = []
    monkeypatch.setattr(runner, "prepare_shared_data", lambda s: [])
    monkeypatch.setattr(runner, "_start_ray", lambda *a: events.append("ray started"))
    monkeypatch.setattr(ray, "shutdown", lambda: events.append("ray stopped"))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(runner.SweepRuns, "start_parent", lambda *a: (events.append("parent logged"), 1 / 0))
    not_a_store = tmp_path / "notes.db"
    not_a_store.write_text("meeting notes, not a database\n")
    sweep = load_sweep(ROOT / "sweeps" / "smoke.py")
    with pytest.raises(UserError, match=r"notes.db cannot be read as an MLflow store \(.*\); pass the --tracking-uri"):
        runner.run_sweep(sweep, address=None, storage=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{not_a_store}")
    assert events == [] and not (tmp_path / "ray").exists()  # refused before Ray or any folder

    events.clear()  # a good store: the check passes and the sweep goes on to its parent run
    with pytest.raises(ZeroDivisionError):
        runner.run_sweep(sweep, address=None, storage=str(tmp_path / "ray"), tracking_uri=fresh_store(tmp_path))
    assert events == ["ray started", "parent logged", "ray stopped"]

    opened_in, real_init = [], runner.SweepRuns.__init__
    monkeypatch.setattr(runner.SweepRuns, "__init__", lambda self, *a: (opened_in.append(threading.current_thread().name),
                                                                       real_init(self, *a))[1])
    monkeypatch.setattr(runner, "check_cluster_reachable", lambda address: None)
    for address, thread in ((None, "imdb_ray-beside-ray"), ("10.0.0.1:6379", "MainThread")):
        new_store = tmp_path / f"new-{address is None}.db"
        opened_in.clear()
        with pytest.raises(ZeroDivisionError):
            runner.run_sweep(sweep, address=address, storage=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{new_store}")
        assert len(opened_in) == 1 and opened_in[0].startswith(thread) and new_store.exists()


def test_remote_storage_that_does_not_answer_is_refused(monkeypatch):
    """GCS looking for credentials offline waited for minutes (seen here): the look is given REMOTE_STORAGE_WAIT_S."""
    import pyarrow.fs

    from imdb_ray.cli import options

    monkeypatch.setattr(options, "REMOTE_STORAGE_WAIT_S", 0.2)
    class Waiting:  # a filesystem whose look never comes back in time
        from_uri = staticmethod(lambda uri: time.sleep(3))

    monkeypatch.setattr(pyarrow.fs, "FileSystem", Waiting)
    started = time.perf_counter()
    with pytest.raises(UserError, match=r"^--storage gs://bucket/x: no answer in 0.2 s; check the bucket's name"):
        options.check_remote_storage("gs://bucket/x")
    assert time.perf_counter() - started < 2


def test_dry_run_reports_a_checkpoint_not_on_this_machine_without_loading_it(monkeypatch, tmp_path):
    """Offline, loading a hub checkpoint retries for ~20 s and fails; online, a dry run should not fetch gigabytes:
    a Hugging Face model whose checkpoint is neither a folder nor in the cache is named, never loaded."""
    from imdb_ray.models.hf import available_offline
    from imdb_ray.sweep import cost

    monkeypatch.setattr(cost, "measure_speeds", lambda *a: pytest.fail("a checkpoint that is not here was loaded"))
    sweep = Sweep(name="x", space={"model": "bert", "checkpoint": "imdb-ray-tests/never-downloaded"}, search="grid",
                  scheduler="fifo", num_samples=1)
    costs, _ = cost.estimate(sweep)
    assert costs[0].epoch_seconds is None
    assert costs[0].note == ("not measured here: imdb-ray-tests/never-downloaded is not on this machine (a dry run "
                             "downloads nothing; `hf download imdb-ray-tests/never-downloaded` first to measure it)")
    assert available_offline(str(tmp_path)) and not available_offline("imdb-ray-tests/never-downloaded")
    assert not available_offline("not a hub name!")


def test_dry_run_prints_plan(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, err, out = cli(["sweep", "sweeps/gru_lr.py", "--dry-run"], capsys)
    assert code == 0, err
    assert "grid_search([0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03])" in out
    # the measurement's progress is one line per model, not the throwaway caches' build lines (24 for quickstart)
    assert "    gru (1 of 1) ..." in out.splitlines() and "imdb_ray_cost_" not in out + "".join(err), err
    # the cost estimate: gru's epoch measured here, 6 rates x 3 seeds x 5 epochs = 90 trial-epochs
    speed = [ln for ln in out.splitlines() if ln.strip().startswith("gru ") and "s/epoch" in ln]
    # the slow end may follow the mean, "(..s at its slowest searched values)", when two timings differ by >15 %
    assert len(speed) == 1 and "18.0 trial(s) x 5 epoch(s)" in speed[0]
    assert float(re.search(r"  ([0-9.]+)s/epoch", speed[0]).group(1)) > 0
    assert "total: 90 trial-epochs" in out and "CPU-hours" in out
    once = next(ln for ln in out.splitlines() if ln.strip().startswith("once:"))  # 3 tested (test_top), measured
    assert "test evaluation of ~3 trial(s) one after another ~" in once and int(once.split("~")[-1][:-1]) > 0


def test_dry_run_estimate_gives_the_slow_end_a_searcher_can_keep_to():
    """Each model is measured at both ends of its searched values; the estimate is their mean, and the line
    also says what the sweep costs if every trial takes the slower end and every rerun is of the slowest model
    (TPE favours what scores well, not what is cheap)."""
    from imdb_ray.sweep.cost import ModelCost, cost_lines

    sweep = Sweep(name="x", space={"model": "gru"}, cpus_per_worker=1).validate()
    costs = [ModelCost("gru", 4, 2, 10.0, slowest_epoch_seconds=20.0), ModelCost("cnn", 4, 2, 5.0),
             ModelCost("gru (confirm)", 2, 4, 7.5, slowest_epoch_seconds=20.0, rerun=True)]
    lines = cost_lines(sweep, costs, 0.0, 2)
    assert lines[1].endswith("10.0s/epoch (20.0s at its slowest searched values)")  # the confirm row: the mean alone
    assert lines[3].endswith("7.5s/epoch") and lines[2].endswith("5.0s/epoch")
    total = lines[-1]  # mean: 4x2x10 + 4x2x5 + 2x4x7.5 = 180 s; slow end: 160 + 40 + 160 = 360 s; over 2 at once
    assert "total: 24 trial-epochs, 0.05 CPU-hours" in total and "up to 0.10 CPU-hours" in total
    assert "if every trial takes its model's slowest searched values and the reruns are all of the slowest model" in total
    even = cost_lines(sweep, [ModelCost("cnn", 4, 2, 5.0)], 0.0, 2)[-1]
    assert "up to" not in even  # one setting, one speed: no range


def test_a_gpu_sweep_timed_on_a_cpu_gives_trial_hours_not_gpu_hours():
    """A sweep that asks for GPUs, estimated where there is none: the models' speeds are this CPU's, so the total is
    trial-hours at that speed (no GPU share applied) with a line saying where GPU-hours come from; on a GPU machine
    the same costs are GPU-hours (seconds x the GPU share)."""
    from imdb_ray.sweep.cost import ModelCost, cost_lines

    sweep = Sweep(name="x", space={"model": "gru"}, cpus_per_worker=1, gpus_per_worker=0.25).validate()
    costs = [ModelCost("gru", 4, 2, 450.0)]  # 3,600 s of trials
    on_cpu = cost_lines(sweep, costs, 0.0, None)
    assert on_cpu[-2].endswith("total: 8 trial-epochs, 1.00 trial-hours at this machine's CPU speed")
    assert on_cpu[-1].strip().startswith("the sweep asks for GPUs and this machine has none") and "GPU-hours" not in on_cpu[-2]
    on_gpu = cost_lines(sweep, costs, 0.0, None, gpu_bytes=80 * 2**30)
    assert on_gpu[-1].endswith("total: 8 trial-epochs, 0.25 GPU-hours")


def fixed_costs_of(monkeypatch, per_sweep: float, per_direct_trial: float) -> None:
    """The dry run's fixed costs (the recorded ones in cost.py) set to those the test's arithmetic is written for."""
    from imdb_ray.sweep import cost

    monkeypatch.setattr(cost, "SWEEP_FIXED_S", per_sweep)
    monkeypatch.setattr(cost, "TRIAL_FIXED_S", {**cost.TRIAL_FIXED_S, "direct": per_direct_trial})


def test_dry_run_estimate_adds_the_test_evaluations_the_driver_runs_one_after_another(monkeypatch):
    """After each stage the driver scores the tested trials on validation and test, one at a time, outside the trial
    slots: the search's top (the largest of test_top, ensemble_top, confirm_top), the best of each `test_each`
    value, every confirmation rerun; at the mean test-evaluation time, or the slowest model's at the slow end."""
    from imdb_ray.sweep.cost import ModelCost, cost_lines, tested_count

    fixed_costs_of(monkeypatch, per_sweep=11.1, per_direct_trial=0.01)

    space = {"model": {"gru": {"hidden": tune.choice([32, 64])}, "cnn": {}, "lstm": {}}}
    sweep = Sweep(name="x", space=space, num_samples=8, test_top=3, ensemble_top=3, confirm_top=2, confirm_seeds=2,
                  cpus_per_worker=1).validate()
    assert tested_count(sweep) == 3 + 2 * 2
    assert tested_count(dataclasses.replace(sweep, test_each="model")) == 3 + 2 + 2 * 2  # two more models' best
    assert tested_count(dataclasses.replace(sweep, test_each="hidden")) == 3 + 1 + 2 * 2  # only gru has hidden
    assert tested_count(dataclasses.replace(sweep, num_samples=2, confirm_top=0)) == 2  # no more than ran
    costs = [ModelCost("gru", 4, 2, 10.0, slowest_epoch_seconds=30.0, test_seconds=2.0), ModelCost("cnn", 4, 2, 5.0, test_seconds=4.0)]
    once, total = cost_lines(sweep, costs, 0.0, 2)[-2:]
    assert once.endswith("test evaluation of ~7 trial(s) one after another ~21s")  # 7 x the mean, 3 s
    # wall: 11.1 s fixed + 21 s testing + (80 + 40) s of trials over 2 slots = 92 s; slow end: 11.1 + 7 x 4 + (240 + 40) / 2
    assert "~1.5m wall at 2 trial(s) at once" in total and "~3.0m wall if every trial" in total


def test_dry_run_wall_waits_for_the_last_trial_of_each_stage(monkeypatch):
    """A stage lasts until its last trial ends: trial-seconds over the slots would leave out the slots that wait for it
    (3 trials on 2 slots take two trial lengths, not one and a half; a slow model's trial last keeps one slot busy)."""
    from imdb_ray.sweep.cost import ModelCost, cost_lines, stage_seconds

    fixed_costs_of(monkeypatch, per_sweep=11.1, per_direct_trial=0.01)

    assert stage_seconds([ModelCost("gru", 3, 2, 10.0)], slots=2) == 40  # 20 s trials: two rounds, the second half idle
    assert stage_seconds([ModelCost("gru", 4, 2, 10.0)], slots=2) == 40  # the same wall, no slot idle
    assert stage_seconds([ModelCost("gru", 4, 2, 10.0)], slots=2, start=1.0) == 42  # each trial's own start
    # models in turn, each trial in the first slot to free: cnn 10 | gru 30 | cnn 10 -> slots end at 20 and 30
    assert stage_seconds([ModelCost("cnn", 2, 2, 5.0), ModelCost("gru", 1, 3, 10.0)], slots=2) == 30
    assert stage_seconds([ModelCost("gru", 3, 2, 10.0, slowest_epoch_seconds=20.0)], slots=2, slow=True) == 80
    assert stage_seconds([ModelCost("bert", 4, 2, None), ModelCost("cnn", 4, 2, 5.0)], slots=4) == 10  # unmeasured: out
    sweep = Sweep(name="x", space={"model": "gru"}, cpus_per_worker=1, confirm_top=0).validate()
    # 3 trials x 60 s on 2 slots: 120 s of wall (not 90), plus 11.1 s per sweep
    assert "~2.2m wall at 2 trial(s) at once" in cost_lines(sweep, [ModelCost("gru", 3, 6, 10.0)], 0.0, 2)[-1]
    # the confirmation reruns are a stage of their own, after the search: 2 x 40 s on 2 slots adds 40 s
    lines = cost_lines(sweep, [ModelCost("gru", 3, 6, 10.0), ModelCost("gru (confirm)", 2, 4, 10.0, rerun=True)], 0.0, 2)
    assert "~2.9m wall at 2 trial(s) at once" in lines[-1]


def test_resource_overrides_fit_a_gpu_sweep_on_this_machine(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, err, out = cli(["sweep", "sweeps/classic.py", "--dry-run", "--no-estimate", "--cpus-per-worker", "1",
                          "--gpus-per-worker", "0"], capsys)
    assert code == 0, err
    assert "per trial: 1 worker(s) x 1 CPU, 0 GPU" in out
    assert "trials at once on this machine" in out and "none" not in out.split("trials at once")[1].splitlines()[0]
    # a constant written under one model is shown on that model's line, the shared ones once
    cnn = next(ln for ln in out.splitlines() if ln.strip().startswith("cnn:"))
    assert cnn.endswith("; fixed for cnn: max_len=512"), cnn
    assert "fixed for" not in next(ln for ln in out.splitlines() if ln.strip().startswith("gru:"))
    assert "fixed: epochs=6, patience=2, max_len=256, truncation='head+tail'" in out


def test_workers_per_trial_from_the_command_line_makes_trials_data_parallel_on_ray_train(capsys, monkeypatch):
    """--workers-per-trial: the file's one-worker trials (auto chose direct) become Ray Train runs of N workers, the
    trial's GPUs spelled gpus_per_trial split over them; a bad count is one line before anything starts."""
    monkeypatch.chdir(ROOT)
    code, err, out = cli(["sweep", "sweeps/quickstart.py", "--dry-run", "--no-estimate", "--workers-per-trial", "2",
                          "--cpus-per-worker", "0.99"], capsys)
    assert code == 0, err
    assert "trainer=ray_train" in out and "per trial: 2 worker(s) x 0.99 CPU, 0 GPU" in out
    assert "trials at once on this machine (2 CPU / 0 GPU): 1" in out
    code, err, _ = cli(["sweep", "sweeps/quickstart.py", "--dry-run", "--workers-per-trial", "0"], capsys)
    assert code == 2 and err == [f"error: {ROOT / 'sweeps' / 'quickstart.py'}: workers_per_trial=0 must be an integer > 0"], err
    split = Sweep(name="x", space={"model": "gru"}, gpus_per_trial=1).with_overrides(workers_per_trial=4)
    assert (split.trainer, split.workers_per_trial, split.gpus_per_worker) == ("ray_train", 4, 0.25)
    assert Sweep(name="x", space={"model": "gru"}).with_overrides(workers_per_trial=1).trainer == "direct"
    # and back: a file of several workers that left the trainer to auto runs one-worker trials directly
    several = Sweep(name="x", space={"model": "gru"}, workers_per_trial=2)
    assert (several.validate().trainer, several.with_overrides(workers_per_trial=1).trainer) == ("ray_train", "direct")
    explicit = Sweep(name="x", space={"model": "gru"}, workers_per_trial=2, trainer="ray_train")
    assert explicit.with_overrides(workers_per_trial=1).trainer == "ray_train"  # asked for: kept


def test_select_for_test_takes_the_top_and_the_best_of_each_model():
    import pandas as pd

    from imdb_ray.sweep.evaluate import select_for_test

    class Result:  # the parts of a Ray Tune Result that the selection reads
        def __init__(self, model, accuracies):
            self.config, self.metrics = {"model": model}, {"val_accuracy": accuracies[-1]}
            self.metrics_dataframe = pd.DataFrame({"val_accuracy": accuracies})

    results = [Result("tfidf_lr", [0.90]), Result("tfidf_lr", [0.89]), Result("gru", [0.80, 0.88]),
               Result("cnn", [0.87, 0.70]), Result("cnn", [0.86]), Result("lstm", [0.5])]
    sweep = Sweep(name="x", space={"model": "gru"}, test_top=2, ensemble_top=0)
    assert [r.config["model"] for r in select_for_test(results, sweep)] == ["tfidf_lr", "tfidf_lr"]
    # an ensemble of the top 3 needs their predictions: the third is evaluated too
    assert len(select_for_test(results, dataclasses.replace(sweep, ensemble_top=3))) == 3
    sweep.test_each = "model"  # then the best of each other model, by its best epoch (cnn's 0.87, not its last 0.70)
    chosen = select_for_test(results, sweep)
    assert [(r.config["model"], r.metrics_dataframe["val_accuracy"].max()) for r in chosen] == [
        ("tfidf_lr", 0.90), ("tfidf_lr", 0.89), ("gru", 0.88), ("cnn", 0.87), ("lstm", 0.5)]


def test_a_sweeps_train_runs_start_no_helper_actors_they_do_not_use():
    """A trial's TorchTrainer leaves out Ray 2.60's DatasetManager (no Ray Dataset is passed) and the
    PlacementGroupCleaner (EndStoppedTrainRuns does its work under Tune); every other default stays."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from imdb_ray.sweep.trial import sweep_torch_trainer

    kwargs = {"train_loop_per_worker": lambda config: None, "scaling_config": ray.train.ScalingConfig(num_workers=2)}
    plain = [type(c).__name__ for c in TorchTrainer(**kwargs)._create_default_callbacks()]
    lean = [type(c).__name__ for c in sweep_torch_trainer()(**kwargs)._create_default_callbacks()]
    assert {"DatasetsCallback", "PlacementGroupCleanerCallback"} <= set(plain)
    assert lean == [name for name in plain if name not in ("DatasetsCallback", "PlacementGroupCleanerCallback")]
    assert issubclass(sweep_torch_trainer(), TorchTrainer)


def test_several_workers_need_ray_train():
    with pytest.raises(UserError, match="workers_per_trial=2 needs trainer='ray_train'"):
        Sweep(name="x", space={"model": "gru"}, trainer="direct", workers_per_trial=2).validate()
    assert Sweep(name="x", space={"model": "gru"}, trainer="ray_train", workers_per_trial=2).validate().workers_per_trial == 2


def test_confirmation_reruns_the_top_configs_with_new_seeds():
    import pandas as pd

    from imdb_ray.sweep.evaluate import confirm_configs

    class Result:
        def __init__(self, trial_id, lr, accuracies):
            self.config = {"model": "gru", "lr": lr, "seed": 7, "n_train": 400}
            self.metrics = {"val_accuracy": accuracies[-1], "trial_id": trial_id}
            self.metrics_dataframe = pd.DataFrame({"val_accuracy": accuracies})

    results = [Result("a", 1e-3, [0.7, 0.8]), Result("b", 3e-3, [0.85, 0.6]), Result("c", 1e-2, [0.75])]
    sweep = Sweep(name="x", space={"model": "gru"}, confirm_top=2, confirm_seeds=3)
    configs = confirm_configs(results, sweep)
    assert len(configs) == 2 * 3  # exactly top k x n seeds
    assert [(c["confirms"], c["lr"], c["seed"]) for c in configs] == [
        ("b", 3e-3, 8), ("b", 3e-3, 9), ("b", 3e-3, 10), ("a", 1e-3, 8), ("a", 1e-3, 9), ("a", 1e-3, 10)]
    assert all(c["n_train"] == 400 for c in configs)  # the same data and split: only the seed changes
    with pytest.raises(UserError, match="confirm_seeds"):
        Sweep(name="x", space={"model": "gru"}, confirm_top=1, confirm_seeds=0).validate()


def test_confirmation_spends_no_rerun_on_a_seed_independent_baseline():
    """Regression (the recorded classic sweep): the top 3 by validation were two nbsvm configs and tfidf_lr,
    so every rerun repeated a deterministic fit (sd 0) and no neural config was confirmed. Baselines are now
    confirmed by their own run; the reruns go to the best seed-dependent configs, which are also tested."""
    import pandas as pd

    from imdb_ray.sweep.evaluate import confirm_configs, select_for_test

    class Result:
        def __init__(self, trial_id, model, accuracy):
            self.config = {"model": model, "seed": 0}
            self.metrics = {"val_accuracy": accuracy, "trial_id": trial_id}
            self.metrics_dataframe = pd.DataFrame({"val_accuracy": [accuracy]})

    results = [Result("n", "nbsvm", 0.91), Result("t", "tfidf_lr", 0.90), Result("c", "cnn", 0.89),
               Result("g", "gru", 0.88), Result("l", "lstm", 0.87)]
    sweep = Sweep(name="x", space={"model": "gru"}, test_top=1, ensemble_top=0, confirm_top=2, confirm_seeds=2)
    assert [(c["confirms"], c["seed"]) for c in confirm_configs(results, sweep)] == [("c", 1), ("c", 2), ("g", 1), ("g", 2)]
    # the test top (nbsvm) and the two configs the stage reruns: their search runs can be crowned
    assert [r.metrics["trial_id"] for r in select_for_test(results, sweep)] == ["n", "c", "g"]
    assert confirm_configs(results[:2], sweep) == []  # only baselines: nothing to rerun


def test_a_resumed_trial_cut_before_its_next_epoch_ranks_on_its_own_running_best():
    """Regression (the recorded classic sweep, at its time budget): a ray_train trial resumed after the driver
    stopped starts a new Tune result.json; cut before its next epoch, its history is empty, and ranking it
    raised KeyError. Its last result still carries the loop's running best, which is what it ranks on."""
    import pandas as pd

    from imdb_ray.sweep.evaluate import best_value, leaderboard, select_for_test

    class Result:
        def __init__(self, trial_id, model, last, best, history):
            self.config, self.path, self.error = {"model": model}, f"/x/{trial_id}", None
            self.metrics = {"val_accuracy": last, "best_val_accuracy": best, "trial_id": trial_id, "epoch": 3}
            self.metrics_dataframe = pd.DataFrame(history)

    resumed = Result("t", "transformer", 0.8505, 0.8628, {})  # epochs 1-3 logged before the resume, none after
    fine = Result("g", "gru", 0.86, 0.8677, {"val_accuracy": [0.85, 0.8677, 0.86]})
    sweep = Sweep(name="x", space={"model": "gru"}, test_top=1, test_each="model")
    assert best_value(resumed, sweep) == 0.8628 and best_value(fine, sweep) == 0.8677
    assert [r["model"] for r in leaderboard([resumed, fine], sweep)] == ["gru", "transformer"]
    assert [r.config["model"] for r in select_for_test([resumed, fine], sweep)] == ["gru", "transformer"]
    cut = Result("c", "transformer", 0, 0, {})  # started just before the budget ended: no epoch, no error
    cut.metrics = {}
    broken = Result("b", "gru", 0, 0, {})
    broken.metrics, broken.error = {}, RuntimeError("boom")
    tail = leaderboard([fine, cut, broken], sweep)[1:]
    assert [(r["trial"], r["model"], r["status"]) for r in tail] == [("c", "transformer", "no epoch"), ("b", "gru", "failed")]
    assert "before its first epoch" in tail[0]["error"] and "boom" in tail[1]["error"]
    # a real trial's folder: its id, not Tune's long name of it (every searched value, the date)
    cut.path = "/x/smoke/ray_train_trial_273af240_3_batch_size=32,cache_dir=work_main_cache,epochs=6_2026-12-05_19-29-55"
    assert leaderboard([cut], sweep)[0]["trial"] == "273af240"


def test_a_resumed_sweep_keeps_a_test_evaluation_an_earlier_invocation_completed(tmp_path):
    """Each --resume of a sweep's confirmation stage used to evaluate the search's tested trials on test
    again (half an hour on 2 CPUs for the classic sweep). A complete saved evaluation of the same trial is
    kept; another trial's (the best changed) or one with a file gone is not."""
    from types import SimpleNamespace
    from unittest import mock

    import pandas as pd

    from imdb_ray.config import TrialConfig
    from imdb_ray.sweep.evaluate import save_tested, saved_evaluation

    table = pd.DataFrame({"row": [0, 1], "label": [1, 0], "prob_positive": [0.9, 0.2]})
    evaluation = SimpleNamespace(metrics={"test_accuracy": 1.0}, predictions={"test": table, "val": table}, model=None, vocab=None)
    with mock.patch("imdb_ray.bundle.save_bundle", lambda model, cfg, path, vocab: path.mkdir() or path):
        files = save_tested(tmp_path / "best_trial", TrialConfig(), evaluation, "t1")
    kept = saved_evaluation(tmp_path / "best_trial", "t1")
    assert kept == {**files, "metrics": {"test_accuracy": 1.0}}
    assert saved_evaluation(tmp_path / "best_trial", "t2") is None
    Path(files["val_predictions"]).unlink()
    assert saved_evaluation(tmp_path / "best_trial", "t1") is None
    assert saved_evaluation(tmp_path / "nothing", "t1") is None


def test_train_runs_of_trials_cut_by_the_sweeps_end_are_ended(monkeypatch):
    """Tune stops the trials still running at the time budget without on_trial_complete; their Train
    runs must be ended and their worker groups freed when the experiment ends, before the confirmation
    stage asks for CPUs."""
    from types import SimpleNamespace

    from imdb_ray.sweep import callbacks

    released = []
    monkeypatch.setattr(callbacks, "release_placement_groups", lambda ids: released.append(sorted(ids)) or len(ids))
    hook = callbacks.EndStoppedTrainRuns()
    done, cut = SimpleNamespace(trial_id="done"), SimpleNamespace(trial_id="cut")
    hook.on_trial_result(1, [], done, {"train_placement_group": "aa"})
    hook.on_trial_result(1, [], cut, {"train_placement_group": "bb"})
    hook.on_trial_result(2, [], cut, {"train_placement_group": "cc"})  # restarted on a new group
    hook.on_trial_complete(2, [], done)
    assert released == [["aa"]]
    hook.on_experiment_end([done, cut])
    assert released == [["aa"], ["bb", "cc"]] and hook.groups == {}


@pytest.mark.parametrize("overrides, expect", [
    (["epochs=1", "max_len=32"], {"epochs": 1, "max_len": 32}),
    (["seed=3"], {"seed": 3}),  # a setting of Sweep(...) too, and a trial's: here the trial's
    (["gru.hidden=32"], {"gru.hidden": 32}),
    (["model=cnn", "epochs=1"], {"epochs": 1}),  # the cnn branch alone, its search kept (checked below)
])
def test_key_value_overrides_replace_constants_of_the_space(overrides, expect):
    sweep = load_sweep(ROOT / "sweeps" / "smoke.py", space_overrides=overrides)
    tree = sweep.branches()
    if "model=cnn" in overrides:  # it once made the space flat: cnn at its defaults, nothing searched
        assert list(tree) == ["cnn"] and sweep.searched_keys() == {"cnn": ["lr"]} and tree["cnn"]["num_filters"] == 16
    for key, value in expect.items():
        model, _, name = key.rpartition(".")
        assert all(b[name] == value for m, b in tree.items() if not model or m == model), (key, tree)


@pytest.mark.parametrize("argv, message", [
    (["epochs1"], "override 'epochs1': write key=value"),
    (["lr=0.1"], "override 'lr=0.1': lr is searched (tune.loguniform(0.001, 0.03)); overrides replace constants"),
    (["hidden=64"], "override 'hidden=64': gru set(s) hidden in its own branch; write gru.hidden=..."),
    (["nope.x=1"], "override 'nope.x=1': the space has no branch 'nope'"),
    (["model=gur"], "override 'model=gur': no branch 'gur'; the space's branches: gru, cnn (model=NAME or model=NAME,NAME keeps "
                    "those); did you mean gru?"),
    (["gru.hidden=abc"], "hidden='abc' must be an integer > 0"),
    (["dropout=1.5"], "dropout=1.5 must be a number in [0, 1)"),
    (["bogus=1"], "space['bogus']: no model"),
    (["num_samples=3"], "num_samples is a setting of Sweep(...), not of its space; pass --num-samples 3"),
    (["search=random"], "search is a setting of Sweep(...), not of its space; edit it in the sweep file"),
    (["epochs=1", "max_len=64", "epochs=2"], "override 'epochs=2': epochs is given twice (epochs=1 and epochs=2); give it once"),
])
def test_a_bad_override_is_one_line_before_anything_starts(argv, message, capsys):
    code, err, _ = cli(["sweep", str(ROOT / "sweeps" / "smoke.py"), "--dry-run", "--no-estimate", *argv], capsys)
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_the_cost_estimate_counts_ashas_expected_stops_and_the_confirmation_reruns():
    from imdb_ray.sweep.cost import expected_epochs

    asha = Sweep(name="x", space={"model": "gru"})
    assert expected_epochs(asha, 4, trials=1) == 4  # alone at every rung: never stopped
    # many trials: rungs 1 and 2 each keep half, so 1 + 1/2 + 2/4 = 2 epochs; a little more (the first ones go on)
    assert 2.0 < expected_epochs(asha, 4, trials=400) < 2.1
    assert 2.0 < expected_epochs(asha, 4, trials=8) < expected_epochs(asha, 4, trials=3) < 4
    assert 3.0 < expected_epochs(dataclasses.replace(asha, grace_period=2), 4, trials=400) < 3.1
    assert expected_epochs(dataclasses.replace(asha, scheduler="fifo"), 4, trials=8) == 4


def test_the_default_trainer_is_direct_for_one_worker_and_ray_train_for_more():
    assert Sweep(name="x", space={"model": "gru"}).validate().trainer == "direct"
    assert Sweep(name="x", space={"model": "gru"}, workers_per_trial=2).validate().trainer == "ray_train"
    assert Sweep(name="x", space={"model": "gru"}, trainer="ray_train").validate().trainer == "ray_train"  # asked for


def test_folders_a_sweep_or_a_run_names_are_pinned_before_the_working_directory_changes(monkeypatch, tmp_path):
    """A trial runs in its own working directory: a relative checkpoint, data or vectors path that exists here is
    made absolute, in the shared keys and in each model's branch; hub names and keywords stay as written."""
    from imdb_ray.sweep.runner import absolute_space

    for folder in ("models/tiny", "vectors"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "models/tiny/config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "train.csv").write_text("text,label\n")
    (tmp_path / "test.csv").write_text("text,label\n")
    monkeypatch.chdir(tmp_path)
    space = absolute_space({"model": {"hf": {"checkpoint": "models/tiny"}, "bert": {"checkpoint": "bert-base-uncased"},
                                      "gru": {"embeddings": "word2vec"}, "cnn": {"embeddings": "vectors"}},
                            "data": "train.csv,test.csv", "lr": tune.loguniform(1e-4, 1e-2)}, "cache")
    assert space["cache_dir"] == str(tmp_path / "cache")
    assert space["data"] == f"{tmp_path / 'train.csv'},{tmp_path / 'test.csv'}"
    assert space["model"]["hf"]["checkpoint"] == str(tmp_path / "models/tiny")
    assert space["model"]["cnn"]["embeddings"] == str(tmp_path / "vectors")
    assert space["model"]["bert"]["checkpoint"] == "bert-base-uncased"
    assert space["model"]["gru"]["embeddings"] == "word2vec"

    from imdb_ray.config import TrialConfig  # `train`: the run folder's config, which `predict` reads from anywhere
    pinned = TrialConfig.from_flat({"model": "hf", "checkpoint": "models/tiny"}).with_absolute_paths()
    assert pinned.model_args["checkpoint"] == str(tmp_path / "models/tiny")
    hub = TrialConfig.from_flat({"model": "hf", "checkpoint": "org/name"}).with_absolute_paths()
    assert hub.model_args["checkpoint"] == "org/name"


def test_a_dry_run_names_the_store_and_results_folder_it_would_use_and_creates_neither(capsys, tmp_path):
    """A dry run checks the MLflow store and --address as the sweep would (their refusals: the bad-input matrix in
    test_reliability.py) and says where the sweep would write; a sqlite store that is not there yet is named, not made."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, err, out = cli(["sweep", str(ROOT / "sweeps" / "smoke.py"), "--dry-run", "--no-estimate", "--storage",
                          str(tmp_path / "ray"), "--tracking-uri", store], capsys)
    assert code == 0, err
    assert f"MLflow: {store} (a new file, created when the sweep starts); Ray results: {tmp_path / 'ray' / 'smoke'}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []
