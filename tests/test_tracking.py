"""tracking.py without Ray: TrialLog's writes, its buffer and replay while the store is down, and
SweepRuns' queries, against a real local MLflow store (sqlite) behind a switchable fault proxy."""
from __future__ import annotations

import itertools
import os

import pytest
from mlflow.tracking import MlflowClient

from helpers import fresh_store
from imdb_ray.tracking import SweepRuns, Tested, TrialLog

CONFIG = {"model": "gru", "hidden": 32, "lr": 3e-3, "epochs": 3, "n_train": 100}
_names = itertools.count()


class FlakyStore:
    """An MlflowClient whose calls fail while `down`; `lose_next_answer` applies one log_batch and
    then fails, as when the server wrote it but the answer never arrived."""

    def __init__(self, client: MlflowClient):
        self.client, self.down, self.lose_next_answer, self.calls = client, False, False, 0

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            self.calls += 1
            if self.down:
                raise ConnectionError("tracking store down")
            out = method(*args, **kwargs)
            if self.lose_next_answer and name == "log_batch":
                self.lose_next_answer = False
                raise ConnectionError("answer lost")
            return out

        return call


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow")
    return fresh_store(folder), folder


@pytest.fixture
def sweep(store):
    """A fresh sweep (experiment + parent run) in the shared store; a TrialLog with a fake clock."""
    uri, folder = store
    name = f"sweep{next(_names)}"
    sweep_file = folder / f"{name}.py"
    sweep_file.write_text("# a sweep file\n")
    runs = SweepRuns(uri, name)
    parent = runs.start_parent(sweep_file, {"num_samples": 3, "api_token": "hidden"}, f"/ray/{name}", command="cmd")
    flaky = FlakyStore(MlflowClient(uri))
    clock = [0.0]
    log = TrialLog(uri, name, parent, ("CPU", 2.0), client=flaky, retry_s=10, clock=lambda: clock[0])
    return runs, parent, log, flaky, clock


def steps(runs: SweepRuns, run, key="val_accuracy"):
    return [m.step for m in sorted(runs.client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def epoch(n: int) -> dict:
    return {"epoch": n, "val_accuracy": 0.5 + n / 10, "train_loss": 1 / n, "done": False, "config": {"x": 1}}


def test_a_trial_run_has_tags_params_one_point_per_epoch_and_an_end(sweep):
    runs, parent, log, _, _ = sweep
    log.start("t1", "trial_t1", CONFIG)
    for n in (1, 2, 3):
        log.result("t1", epoch(n), n)
    log.end("t1", wall=10.0)
    [run] = runs.trials(parent)
    assert run.data.tags["trial_id"] == "t1" and run.data.tags["model"] == "gru" and run.data.tags["family"] == "word"
    assert run.data.params["hidden"] == "32" and run.data.params["lr"] == "0.003" and "cache_dir" in run.data.params
    assert steps(runs, run) == [1, 2, 3] and steps(runs, run, "train_loss") == [1, 2, 3]
    assert "done" not in run.data.metrics and "config" not in run.data.metrics  # numbers only, booleans are not
    assert run.info.status == "FINISHED"
    assert run.data.metrics["wall_seconds"] == 10.0 and run.data.metrics["device_seconds"] == 20.0
    assert run.data.tags["device_kind"] == "CPU"
    assert {a.path for a in runs.client.list_artifacts(run.info.run_id)} == {"trial_config.json"}
    # the parent: settings without secrets, the sweep file, the command
    parent_run = runs.parent()
    assert parent_run.info.run_id == parent and parent_run.data.params == {"num_samples": "3"}
    assert parent_run.data.tags["imdb_ray.command"] == "cmd" and runs.parent(f"/ray/{runs.experiment}") is not None
    # what the numbers depend on beyond config and seed: library versions and the machine
    from importlib import metadata

    assert f"torch {metadata.version('torch')}, ray {metadata.version('ray')}" in parent_run.data.tags["imdb_ray.versions"]
    assert parent_run.data.tags["imdb_ray.machine"].endswith(f"{os.cpu_count()} CPUs")


def test_a_train_run_carries_the_library_versions_and_the_machine(tmp_path):
    from importlib import metadata

    from imdb_ray.config import TrialConfig
    from imdb_ray.tracking.runs import TrainRun

    uri = fresh_store(tmp_path)
    run = TrainRun(uri, "train", TrialConfig(model="gru"), tmp_path)
    tags = MlflowClient(uri).get_run(run.run_id).data.tags
    assert tags["imdb_ray.versions"].startswith(f"imdb_ray {metadata.version('imdb_ray')} (torch {metadata.version('torch')}")
    assert "; Python 3." in tags["imdb_ray.versions"] and tags["imdb_ray.machine"].endswith(f"{os.cpu_count()} CPUs")


def test_events_wait_in_order_while_the_store_is_down_then_are_written(sweep, capsys):
    runs, parent, log, flaky, clock = sweep
    log.start("t1", "trial_t1", CONFIG)
    log.result("t1", epoch(1), 1)
    flaky.down = True
    log.result("t1", epoch(2), 2)
    log.start("t2", "trial_t2", CONFIG)  # a trial that starts during the outage
    log.result("t2", epoch(1), 1)
    assert len(log.pending) == 3 and "stopped answering" in capsys.readouterr().out
    flaky.down = False
    clock[0] = 5.0  # before the retry interval: new events queue behind the old ones, no call is made
    calls = flaky.calls
    log.result("t1", epoch(3), 3)
    assert len(log.pending) == 4 and flaky.calls == calls
    clock[0] = 11.0  # the next event after the interval writes everything, oldest first
    log.end("t1", wall=3.0)
    log.end("t2", failed=True, error="Traceback ...\nValueError: pooling must be last", wall=1.0)
    assert log.pending == [] and "answers again" in capsys.readouterr().out
    by_trial = {r.data.tags["trial_id"]: r for r in runs.trials(parent)}
    assert steps(runs, by_trial["t1"]) == [1, 2, 3] and steps(runs, by_trial["t2"]) == [1]
    assert by_trial["t1"].info.status == "FINISHED" and by_trial["t2"].info.status == "FAILED"
    assert by_trial["t2"].data.tags["error"] == "ValueError: pooling must be last"


def test_a_replayed_epoch_whose_answer_was_lost_is_written_once(sweep):
    runs, parent, log, flaky, clock = sweep
    log.start("t1", "trial_t1", CONFIG)
    flaky.lose_next_answer = True  # the store applies epoch 1, the answer is lost: it is kept for replay
    log.result("t1", epoch(1), 1)
    assert len(log.pending) == 1
    clock[0] = 20.0
    log.result("t1", epoch(2), 2)
    [run] = runs.trials(parent)
    assert steps(runs, run) == [1, 2] and steps(runs, run, "epoch") == [1, 2]


def test_an_epoch_trained_again_after_a_restore_is_not_written_twice(sweep):
    runs, parent, log, _, _ = sweep
    log.start("t1", "trial_t1", CONFIG)
    for n in (1, 2, 3, 2, 3, 4):  # restored from epoch 1's checkpoint after reporting epoch 3
        log.result("t1", epoch(n), n)
    [run] = runs.trials(parent)
    assert steps(runs, run) == [1, 2, 3, 4] and run.data.tags["imdb_ray.rerun_epochs"] == "2,3"


def test_a_resumed_trial_continues_its_own_run(sweep):
    runs, parent, log, flaky, clock = sweep
    log.start("t1", "trial_t1", CONFIG)
    log.result("t1", epoch(1), 1)
    log.result("t1", epoch(2), 2)
    # the driver dies; `--resume` makes a new TrialLog on the same parent
    again = TrialLog(runs.uri, runs.experiment, parent, client=MlflowClient(runs.uri))
    again.start("t1", "trial_t1", CONFIG)
    again.result("t1", epoch(2), 2)  # Tune reruns from its last snapshot: already written
    again.result("t1", epoch(3), 3)
    again.end("t1", cut="sweep ended (time budget or interrupt) after epoch 3")
    [run] = runs.trials(parent)
    assert steps(runs, run) == [1, 2, 3] and run.info.status == "KILLED"
    assert run.data.tags["imdb_ray.stopped"].startswith("sweep ended") and run.data.tags["attempt"] == "2"
    # that was a Ctrl-C: resumed once more, the trial runs out; its run no longer says it was cut
    third = TrialLog(runs.uri, runs.experiment, parent, client=MlflowClient(runs.uri))
    third.start("t1", "trial_t1", CONFIG)
    third.result("t1", epoch(4), 4)
    third.end("t1")
    [run] = runs.trials(parent)
    assert steps(runs, run) == [1, 2, 3, 4] and run.info.status == "FINISHED" and run.data.tags["attempt"] == "3"
    assert "imdb_ray.stopped" not in run.data.tags


def test_finish_reports_what_the_store_never_took(sweep):
    runs, parent, log, flaky, clock = sweep
    log.start("t1", "trial_t1", CONFIG)
    flaky.down = True
    log.result("t1", epoch(1), 1)
    log.end("t1", wall=1.0)
    assert log.finish(wait_s=0) == 2
    flaky.down = False
    assert log.finish(wait_s=0) == 0 and runs.trials(parent)[0].info.status == "FINISHED"


def test_sweep_runs_log_tested_and_close_orphans(sweep, tmp_path):
    runs, parent, log, _, _ = sweep
    for trial in ("t1", "t2", "t3"):
        log.start(trial, f"trial_{trial}", CONFIG)
        log.result(trial, epoch(1), 1)
    predictions = tmp_path / "test_predictions.csv"
    predictions.write_text("row,label,prob_positive\n0,1,0.9\n")
    runs.log_tested(parent, [Tested("t1", {"test_accuracy": 0.9}, {"test_predictions": str(predictions)}, is_best=True),
                             Tested("t2", {"test_accuracy": 0.8}, {"test_predictions": str(predictions)}, is_best=False)])
    assert runs.tested_trial_ids(parent) == {"t1", "t2"}
    assert runs.client.get_run(parent).data.metrics["best_test_accuracy"] == 0.9
    assert runs.best_trial_run_id() == runs.trials(parent, "t1")[0].info.run_id
    assert runs.close_orphans(parent, {"t1", "t2"}) == 1
    [orphan] = runs.trials(parent, "t3")
    assert orphan.info.status == "KILLED" and "imdb_ray.orphaned" in orphan.data.tags


def test_a_report_ranks_a_val_loss_sweep_on_its_lowest_loss(store):
    """The report ranks on the sweep's own metric and mode (from its parent run), not always on accuracy."""
    from imdb_ray.report import collect

    uri, folder = store
    (folder / "loss.py").write_text("# a val_loss sweep\n")
    runs = SweepRuns(uri, "loss_sweep")
    parent = runs.start_parent(folder / "loss.py", {"metric": "val_loss", "mode": "min"}, "/ray/loss_sweep")
    log = TrialLog(uri, "loss_sweep", parent, ("CPU", 1.0))
    for trial, (loss, accuracy) in {"a": (0.50, 0.80), "b": (0.30, 0.70), "c": (0.40, 0.90)}.items():
        log.start(trial, trial, CONFIG)
        log.result(trial, {"val_loss": loss, "best_val_loss": loss, "val_accuracy": accuracy}, 1)
        log.end(trial)
    _, rows = collect(uri, "loss_sweep")
    assert [r.name for r in rows] == ["b", "c", "a"] and [r.selection for r in rows] == [0.30, 0.40, 0.50]


def test_a_sqlite_stores_artifacts_live_beside_its_file_wherever_the_command_ran(tmp_path, monkeypatch):
    """MLflow puts a sqlite store's artifacts in ./mlruns of whatever folder created the experiment: a sweep
    started elsewhere (or a test run from the repository) scattered them there. They go beside the store."""
    store_dir, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store_dir.mkdir(), elsewhere.mkdir()
    uri = fresh_store(store_dir)
    monkeypatch.chdir(elsewhere)
    runs = SweepRuns(uri, "my sweep/1")
    (tmp_path / "s.py").write_text("# a sweep file\n")
    runs.start_parent(tmp_path / "s.py", {"num_samples": 1}, "/ray/x")  # logs the sweep file as an artifact
    assert list(store_dir.glob("mlruns/my_sweep_1/*/artifacts/sweep/s.py")) and not list(elsewhere.iterdir())
    assert SweepRuns(uri, "my sweep/1").experiment_id() == runs.experiment_id()  # found again, not made twice
