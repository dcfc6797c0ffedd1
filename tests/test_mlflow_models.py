"""Models in MLflow: a `train` run logs its run and a pyfunc model (and a baseline's sklearn flavour),
`predict` reads run ids, runs:/ and models:/ URIs, and the Model Registry keeps each sweep's champion."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from helpers import cli, fresh_store
from imdb_ray.bundle import Predictor

REVIEWS = ["One of the best films I have seen, moving and funny.", "Dull, far too long, and badly acted."]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small cnn trained by `train` (2 epochs) into its own MLflow store; its cache then removed."""
    from imdb_ray.__main__ import main

    folder = tmp_path_factory.mktemp("mlflow_models")
    uri = fresh_store(folder)
    assert main(["train", "--model", "cnn", "--n-train", "240", "--n-test", "100", "--max-len", "64", "--embed-dim", "16",
                 "--w2v-epochs", "1", "--epochs", "2", "--num-filters", "8", "--cache-dir", str(folder / "cache"),
                 "--run-dir", str(folder / "run"), "--tracking-uri", uri, "--quiet"]) == 0
    shutil.rmtree(folder / "cache")
    return folder, uri, (folder / "run" / "mlflow_run_id").read_text().strip()


def test_train_logs_its_run_metrics_and_model(trained):
    folder, uri, run_id = trained
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert client.get_experiment(run.info.experiment_id).name == "train" and run.info.status == "FINISHED"
    assert run.data.params["model"] == "cnn" and run.data.tags["imdb_ray.run_dir"] == str(folder / "run")
    history = json.loads((folder / "run" / "metrics.json").read_text())
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1, 2]
    assert [m.value for m in client.get_metric_history(run_id, "best_val_accuracy")] == \
        pytest.approx([h["best_val_accuracy"] for h in history["history"]])
    assert run.data.metrics["test_accuracy"] == pytest.approx(history["summary"]["test_accuracy"])
    [output] = run.outputs.model_outputs  # one logged model: the pyfunc (a neural model has no sklearn flavour)
    model = client.get_logged_model(output.model_id)
    assert model.name == "model" and model.source_run_id == run_id


def test_the_logged_pyfunc_loads_in_a_fresh_process_and_answers_what_predict_does(trained, tmp_path, capsys, monkeypatch):
    """No training data or cache needed; the signature says text in, label and probabilities out."""
    folder, uri, run_id = trained
    script = ("import json, sys, mlflow, pandas as pd\n"
              "mlflow.set_tracking_uri(sys.argv[1])\n"
              "model = mlflow.pyfunc.load_model(sys.argv[2], dst_path=sys.argv[4])\n"
              "print(json.dumps({'inputs': model.metadata.get_input_schema().input_names(),\n"
              "                  'outputs': model.metadata.get_output_schema().input_names(),\n"
              "                  'rows': model.predict(pd.DataFrame({'text': json.loads(sys.argv[3])})).to_dict('records')}))\n")
    (tmp_path / "loaded").mkdir()
    proc = subprocess.run([sys.executable, "-c", script, uri, f"runs:/{run_id}/model", json.dumps(REVIEWS), str(tmp_path / "loaded")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["inputs"] == ["text"] and answer["outputs"] == ["label", "prob_negative", "prob_positive"]
    expected = Predictor(folder / "run" / "model").predict_proba(REVIEWS)
    assert [r["prob_positive"] for r in answer["rows"]] == pytest.approx(list(expected), abs=1e-5)
    # predict takes the run id and the runs:/ URI, and answers the same as from the run folder; the model it
    # downloads is gone when it ends (MLflow's own temporary folder per download was left behind by every call)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temporary))
    outputs = [cli(["predict", source, *REVIEWS, "--tracking-uri", uri], capsys)
               for source in (str(folder / "run"), run_id, f"runs:/{run_id}/model")]
    assert all(code == 0 for code, _, _ in outputs) and len({out for _, _, out in outputs}) == 1
    assert not list(temporary.iterdir())


def test_resumed_train_continues_its_run_with_one_model(trained, capsys):
    folder, uri, run_id = trained
    argv = ["train", "--model", "cnn", "--n-train", "240", "--n-test", "100", "--max-len", "64", "--embed-dim", "16",
            "--w2v-epochs", "1", "--epochs", "3", "--num-filters", "8", "--cache-dir", str(folder / "cache"),
            "--run-dir", str(folder / "run"), "--tracking-uri", uri, "--quiet", "--resume"]
    client = MlflowClient(uri)
    [first_model] = client.get_run(run_id).outputs.model_outputs
    code, err, _ = cli(argv, capsys)
    assert code == 0, err
    run = client.get_run(run_id)
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1, 2, 3]
    live = [m for m in client.search_logged_models([run.info.experiment_id]) if m.source_run_id == run_id]
    assert len(live) == 1 and live[0].model_id != first_model.model_id  # the earlier one deleted
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_a_baseline_logs_the_pyfunc_and_the_sklearn_flavour(tmp_path, capsys):
    uri = fresh_store(tmp_path)
    code, err, _ = cli(["train", "--model", "tfidf_lr", "--n-train", "240", "--n-test", "100", "--run-dir",
                        str(tmp_path / "run"), "--tracking-uri", uri, "--experiment", "baselines", "--quiet"], capsys)
    assert code == 0, err
    run_id = (tmp_path / "run" / "mlflow_run_id").read_text().strip()
    mlflow.set_tracking_uri(uri)
    pipeline = mlflow.sklearn.load_model(f"runs:/{run_id}/sklearn_model", dst_path=str(tmp_path))  # skops format: no pickle
    assert (tmp_path / "run" / "mlflow_run_id").exists() and type(pipeline).__name__ == "Pipeline"
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/model", dst_path=str(tmp_path)).predict(pd.DataFrame({"text": REVIEWS}))
    expected = Predictor(tmp_path / "run" / "model").predict_proba(REVIEWS)
    assert list(served["prob_positive"]) == pytest.approx(list(expected), abs=1e-9)
    assert list(pipeline.predict_proba(REVIEWS)[:, 1]) == pytest.approx(list(expected), abs=1e-9)  # no HTML here to clean


def test_each_registration_is_a_new_version_and_moves_the_champion_alias(trained, capsys):
    from imdb_ray.tracking import register_champion

    folder, uri, run_id = trained
    client = MlflowClient(uri)
    experiment = client.get_run(run_id).info.experiment_id
    [live] = [m for m in client.search_logged_models([experiment]) if m.source_run_id == run_id]
    model_uri = f"models:/{live.model_id}"
    assert register_champion(uri, "demo", model_uri) == "models:/imdb_ray-demo@champion"
    register_champion(uri, "demo", model_uri)
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'imdb_ray-demo'")) == [1, 2]
    assert int(client.get_model_version_by_alias("imdb_ray-demo", "champion").version) == 2
    code, err, out = cli(["predict", "models:/imdb_ray-demo@champion", REVIEWS[0], "--tracking-uri", uri], capsys)
    assert code == 0 and out.startswith(("positive\t", "negative\t")), err
    for wrong in ("models:/imdb_ray-nope@champion", "models:/imdb_ray-demo@champ"):  # the error lists what is there
        code, err, _ = cli(["predict", wrong, REVIEWS[0], "--tracking-uri", uri], capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {wrong}: no model in"), err
        assert err[0].endswith("; registered here: models:/imdb_ray-demo@champion"), err


def test_a_sweep_name_not_in_the_store_is_answered_with_the_names_that_are(trained, capsys):
    folder, uri, _ = trained
    client = MlflowClient(uri)
    code, err, _ = cli(["report", "--sweep", "smok", "--tracking-uri", uri], capsys)  # the store holds train runs only
    assert code == 2 and err == [f"error: no sweep named 'smok' in {uri}; it holds no sweep yet (run one with `sweep`, "
                                 "or pass the --tracking-uri the sweep logged to)"], err
    client.create_run(client.create_experiment("smoke"), tags={"imdb_ray.kind": "sweep"})
    code, err, _ = cli(["report", "--sweep", "smok", "--tracking-uri", uri], capsys)
    assert code == 2 and err == [f"error: no sweep named 'smok' in {uri}; its sweeps: smoke; did you mean smoke?"], err
    code, err, _ = cli(["predict", "sweep:zzz", REVIEWS[0], "--tracking-uri", uri], capsys)
    assert code == 2 and err == [f"error: sweep:zzz: no finished sweep 'zzz' with a best trial in {uri}; its sweeps: smoke"], err


def test_logging_a_model_leaves_the_environment_as_it_was(trained, monkeypatch):
    """MLflow's set_tracking_uri also sets MLFLOW_TRACKING_URI: a command run in-process must not move
    the next one's default store."""
    from imdb_ray.tracking import log_model

    folder, uri, run_id = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nonexistent/elsewhere.db")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    log_model(uri, run_id, folder / "run" / "model")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////nonexistent/elsewhere.db"
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ and "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ


def test_after_the_warm_up_a_processs_first_model_log_scans_no_packages(trained):
    """warm_model_logging, which a sweep runs while its trials train, builds MLflow's map of installed packages: the
    scan of every distribution that a process's first log_model does otherwise, at the sweep's end. In a fresh
    process (this one has logged models already): the map is not there before, and the log after scans nothing."""
    folder, uri, run_id = trained
    script = (
        "import importlib_metadata\n"
        "from mlflow.utils import requirements_utils\n"
        "from imdb_ray.tracking import log_model, warm_model_logging\n"
        "before = requirements_utils._MODULES_TO_PACKAGES is None\n"
        "warm_model_logging()\n"
        "scans = []\n"
        "importlib_metadata.packages_distributions = lambda: scans.append(1) or {}\n"
        f"uri = log_model({uri!r}, {run_id!r}, {str(folder / 'run' / 'model')!r})\n"
        "print(before, len(scans), uri.startswith('models:/'))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-3:] == ["True", "0", "True"], proc.stdout


def test_train_refuses_an_unreachable_store_before_any_work(tmp_path, capsys):
    code, err, _ = cli(["train", "--model", "tfidf_lr", "--run-dir", str(tmp_path / "run"), "--tracking-uri",
                        "http://127.0.0.1:9"], capsys)
    assert code == 2 and "MLflow tracking store http://127.0.0.1:9 is not reachable" in err[0]
    assert not (tmp_path / "run").exists()


def test_train_refuses_an_empty_experiment_name_before_any_work(tmp_path, capsys):
    code, err, _ = cli(["train", "--model", "tfidf_lr", "--run-dir", str(tmp_path / "run"), "--experiment", " "], capsys)
    assert code == 2 and err == ["error: --experiment needs a name (the MLflow experiment the run goes to)"]
    assert not (tmp_path / "run").exists()
