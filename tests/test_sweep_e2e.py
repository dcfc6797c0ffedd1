"""`sweeps/smoke.py` end to end, each sweep a subprocess with a time limit that joins the Ray shared
by the test session (conftest.ray_address)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from helpers import ROOT, actors_started, free_port, run_sweep, steps, sweep_runs
from imdb_ray.environment import library_versions

pytestmark = pytest.mark.slow


def child_runs(tmp_path, experiment):
    return sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", experiment)


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory, ray_address):
    """sweeps/smoke.py run once (direct trials); its folder holds mlflow.db, ray/ and cache/. Two
    secrets are planted: a token-shaped string in a comment of the sweep file, and the value of a
    secret-named environment variable, also quoted in the file."""
    tmp_path = tmp_path_factory.mktemp("smoke")
    sweep_file = tmp_path / "input" / "smoke.py"
    sweep_file.parent.mkdir()
    sweep_file.write_text(f"# planted: {PLANTED_TOKEN} and {PLANTED_ENV_VALUE}\n" + (ROOT / "sweeps" / "smoke.py").read_text())
    return tmp_path, run_sweep(tmp_path, sweep_file, address=ray_address, env={"SMOKE_SERVICE_TOKEN": PLANTED_ENV_VALUE})


PLANTED_TOKEN, PLANTED_ENV_VALUE = "hf_" + "Q" * 34, "s3cr3t-smoke-4242"


def test_no_secret_reaches_mlflow_or_ray_results(smoke_store):
    tmp_path, _ = smoke_store
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "input" not in p.relative_to(tmp_path).parts]
    assert any(p.name == "mlflow.db" for p in written) and any("ray" in p.parts for p in written)
    leaks = [p for p in written if PLANTED_TOKEN.encode() in p.read_bytes() or PLANTED_ENV_VALUE.encode() in p.read_bytes()]
    assert not leaks, leaks
    client, parents, _ = child_runs(tmp_path, "smoke")  # the sweep file copy is there, redacted
    copy = client.download_artifacts(parents[0].info.run_id, "sweep/smoke.py", str(tmp_path / "input"))
    assert Path(copy).read_text().startswith("# planted: <redacted> and <redacted>")


def test_confirmation_reruns_the_winner_with_new_seeds(smoke_store):
    """confirm_top=1, confirm_seeds=2: the best config trained again with seeds 1 and 2 as Ray trials,
    each evaluated once on test, shown by the console and by `report` (means over the new seeds)."""
    tmp_path, out = smoke_store
    client, parents, search = child_runs(tmp_path, "smoke")
    _, _, reruns = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db", "smoke", stage="confirm")
    [best] = [c for c in search if c.data.tags.get("best_trial") == "true"]
    assert len(reruns) == 2 and sorted(c.data.params["seed"] for c in reruns) == ["1", "2"]
    assert all(c.data.tags["imdb_ray.confirms"] == best.data.tags["trial_id"] for c in reruns)
    # runs named as the console names trials: model and sampled values; a rerun says it is one
    assert best.info.run_name.startswith(best.data.params["model"] + " lr=")
    assert sorted(c.info.run_name for c in reruns) == [f"confirm seed {s}: {best.info.run_name}" for s in (1, 2)]
    shared = {k: v for k, v in best.data.params.items() if k != "seed"}
    assert all({k: c.data.params.get(k) for k in shared} == shared for c in reruns)  # the same config, a new seed
    assert all(c.info.status == "FINISHED" and steps(client, c) == [1, 2, 3] for c in reruns)  # no scheduler stop
    assert all("test_accuracy" in c.data.metrics and c.data.tags.get("best_trial") != "true" for c in reruns)
    assert all({"test_predictions.csv", "val_predictions.csv"} <= {a.path for a in client.list_artifacts(c.info.run_id)}
               for c in reruns)
    assert "confirmed (new seeds; mean ± sd; rank by validation):" in out and "2 seeds)" in out
    # the leaderboard: a confirmed section with the reruns' means, paired comparisons, an ensemble row
    results = tmp_path / "results_confirm"
    proc = subprocess.run([sys.executable, "-m", "imdb_ray", "report", "--sweep", "smoke", "--out", str(results),
                           "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    board = (results / "smoke_leaderboard.md").read_text()
    tests = [c.data.metrics["test_accuracy"] for c in reruns]
    assert "## Confirmed configurations" in board and f"{sum(tests) / 2:.4f} ± " in board
    import csv

    rows = list(csv.DictReader(open(results / "smoke_leaderboard.csv")))
    assert len([r for r in rows if r["rank"] != "-"]) == 6  # the reruns are not leaderboard trials
    assert sum(bool(r["mcnemar_p"]) for r in rows) == 2 and any(r["model"] == "ensemble" for r in rows)
    assert "confirmed: mean of 2 seeds" in (results / "comparison.md").read_text()


def test_smoke_sweep_direct_mode(smoke_store):
    tmp_path, out = smoke_store
    assert "== smoke: 6 trials, 0 errored ==" in out and "test_accuracy" in out
    client, parents, children = child_runs(tmp_path, "smoke")
    assert len(parents) == 1 and len(children) == 6
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    histories = [steps(client, c) for c in children]
    assert all(h == list(range(1, len(h) + 1)) for h in histories)  # one point per epoch, no gaps, no repeats
    assert any(len(h) < 3 for h in histories), "ASHA stopped no trial early"
    # where each trial ran (its node's machine) and what the sweep ran with (the driver's libraries and machine)
    assert all(c.data.tags["imdb_ray.machine"].endswith(f"{os.cpu_count()} CPUs") and c.data.tags["node_id"] for c in children)
    assert all(c.data.tags["imdb_ray.versions"] == library_versions() for c in children)  # the node's libraries
    assert parents[0].data.tags["imdb_ray.versions"] == library_versions()
    assert any(len(h) == 3 for h in histories)
    best = [c for c in children if c.data.tags.get("best_trial") == "true"]
    assert len(best) == 1 and 0 <= best[0].data.metrics["test_accuracy"] <= 1
    assert "best_test_accuracy" in parents[0].data.metrics
    # the best trial's test predictions (for confidence intervals) and its model are logged; the model
    # is registered as the sweep's champion
    artifacts = {a.path for a in client.list_artifacts(best[0].info.run_id)}
    assert {"test_predictions.csv", "val_predictions.csv", "trial_config.json"} <= artifacts
    champion = client.get_model_version_by_alias("imdb_ray-smoke", "champion")
    assert champion.run_id == best[0].info.run_id and parents[0].data.tags["imdb_ray.champion"] == "models:/imdb_ray-smoke@champion"
    assert "registered: models:/imdb_ray-smoke@champion" in out
    lines = [ln for ln in open(client.download_artifacts(best[0].info.run_id, "test_predictions.csv", str(tmp_path)))]
    assert lines[0].strip() == "row,label,prob_positive" and len(lines) == 1 + 200
    # the top three by validation were evaluated on test, each with its predictions logged
    tested = [c for c in child_runs(tmp_path, "smoke")[2] if "test_accuracy" in c.data.metrics]
    assert len(tested) == 3
    assert all("test_predictions.csv" in {a.path for a in client.list_artifacts(c.info.run_id)} for c in tested)
    assert all(len(c.outputs.model_outputs) == 1 for c in tested)  # each tested trial logs its pyfunc model
    assert not any(c.outputs and c.outputs.model_outputs for c in children if "test_accuracy" not in c.data.metrics)
    assert all(c.data.metrics["device_seconds"] > 0 and c.data.tags["device_kind"] == "CPU" for c in children)
    assert not any(set(c.data.metrics) & {"pid", "timestamp", "time_total_s", "training_iteration"} for c in children)
    # the report: leaderboard with bootstrap intervals, plots, an index
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "imdb_ray", "report", "--sweep", "smoke", "--out", str(out),
                           "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {"smoke_leaderboard.md", "smoke_leaderboard.csv", "smoke_pareto.png",
                                               "smoke_curves.png", "smoke_asha.png", "README.md", "comparison.md"}
    import csv

    rows = [r for r in csv.DictReader(open(out / "smoke_leaderboard.csv")) if r["model"] != "ensemble"]
    assert len(rows) == 6 and [int(r["rank"]) for r in rows] == list(range(1, 7))
    vals = [float(r["val_accuracy"]) for r in rows]
    assert vals == sorted(vals, reverse=True)
    with_ci = [r for r in rows if r["test_ci95"]]
    assert len(with_ci) == 3
    for r in with_ci:
        low, high = (float(x) for x in r["test_ci95"].strip("[]").split(","))
        assert low <= float(r["test_accuracy"]) <= high and high - low < 0.2
    # the exact sweep command (with its overrides) is recorded on the parent run and shown with the results
    index = (out / "README.md").read_text()
    assert "smoke_leaderboard.md" in index and "`python -m imdb_ray sweep " in index and " --storage " in index
    assert "Sweep: `python -m imdb_ray sweep " in (out / "smoke_leaderboard.md").read_text()
    assert f" Ran with imdb_ray {metadata.version('imdb_ray')} (torch " in (out / "smoke_leaderboard.md").read_text()
    # without --out: an untracked reports/ folder; a project's results/ is never touched unless asked for
    proc = subprocess.run([sys.executable, "-m", "imdb_ray", "report", "--sweep", "smoke", "--tracking-uri",
                           f"sqlite:///{tmp_path}/mlflow.db"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and (tmp_path / "reports" / "smoke_leaderboard.md").exists(), proc.stderr[-2000:]
    assert {p.name for p in (tmp_path / "reports").iterdir()} == {p.name for p in out.iterdir()}
    assert "6 search trials + 2 confirmation reruns" in (out / "README.md").read_text()  # counted apart, as the leaderboard does
    proc = subprocess.run([sys.executable, "-m", "imdb_ray", "predict", "sweep:smoke", "--tracking-uri",
                           f"sqlite:///{tmp_path}/mlflow.db", "One of the best films I have seen."],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split("\t")[0] in ("positive", "negative"), proc.stderr
    assert proc.stderr.startswith("sweep:smoke: its best trial ") and "Downloading" not in proc.stderr, proc.stderr  # named, quiet
    # the conditional space: each trial got (and MLflow shows) only its own model's keys; both models ran
    assert {c.data.params["model"] for c in children} == {"gru", "cnn"}
    for c in children:
        gru = c.data.params["model"] == "gru"
        assert ("hidden" in c.data.params) == gru and ("num_filters" in c.data.params) == (not gru)
    # the console: one line per finished trial with its own keys, a sweep line with an ETA; no Ray tables
    console = smoke_store[1]
    search_console = console.split("[imdb_ray] confirmation:")[0]  # then the confirmation reruns' own lines
    lines = [ln for ln in search_console.splitlines() if ln.startswith("[imdb_ray] trial ")]
    assert len(lines) == 6 and all(" lr=" in ln and "best val_accuracy" in ln for ln in lines)
    assert any("(stopped early)" in ln for ln in lines) and "ETA" in console and "left;" in console
    assert "Configuration for experiment" not in console and "Trial status" not in console
    # shared preprocessing: the splits read and encoded once for all; word vectors once per seed (Word2Vec is
    # part of a seed's randomness): seed 0 for the six search trials, seeds 1 and 2 for the confirmation reruns
    builds = (tmp_path / "cache" / "builds.log").read_text().splitlines()
    assert sorted(b.split("-")[0] for b in builds) == ["data", "vectors", "vectors", "vectors", "words"]


def test_smoke_sweep_ray_train_mode(tmp_path, ray_cluster):
    """Four Ray Train trials, two at a time, ASHA stopping some. Regression: Ray 2.60 left a stopped
    trial's worker placement group reserved, so after two early stops the sweep waited forever; and with
    Tune's trial processes reused, a stopped trial's Train run went on in its process and the next trial failed.
    Each trial starts its controller, workers and sync actor, not the helper actors a sweep leaves out."""
    started = time.time()
    text = (ROOT / "sweeps" / "smoke.py").read_text()
    text = text.replace('name="smoke"', 'name="smoke_train"').replace('trainer="direct"', 'trainer="ray_train"')
    text = text.replace("confirm_top=1", "confirm_top=0")  # the confirmation stage is tested in direct mode
    text = text.replace("num_samples=6", "num_samples=4")  # a Ray Train trial costs a controller and a worker group
    text = text.replace('metric="val_accuracy", mode="max"', 'metric="val_loss", mode="min"')  # ranked, restored on loss
    sweep_file = tmp_path / "smoke_train.py"
    sweep_file.write_text(text)
    out = run_sweep(tmp_path, sweep_file, address=ray_cluster.address, timeout=900)
    assert "== smoke_train: 4 trials, 0 errored ==" in out
    actors = actors_started(ray_cluster, started)  # a test process runs one test at a time on its Ray
    assert actors["RayTrainWorker"] == 4 and actors["SynchronizationActor"] == 4, actors
    # the controller runs in the trial's process and reports to Tune from there: no controller or queue actors
    assert not actors["TrainController"] and not actors["_QueueActor"], actors
    assert not actors["PlacementGroupCleaner"] and not actors["DatasetManager"], actors
    # Tune's trial processes served several trials (reuse_actors), early-stopped ones too: the stop ended their
    # Train run (ray_compat.run_controller_in_process), so each process was free for the next trial
    assert actors["ImplicitFunc"] < 4 and "Could not re-use actor" not in out, actors
    client, parents, children = child_runs(tmp_path, "smoke_train")
    histories = [steps(client, c) for c in children]
    assert len(children) == 4 and all(h == list(range(1, len(h) + 1)) for h in histories)
    assert all(c.data.tags["imdb_ray.machine"].endswith(f"{os.cpu_count()} CPUs") for c in children)  # rank 0's node
    assert all(c.data.tags["imdb_ray.versions"] == library_versions() for c in children)
    assert sum(len(h) < 3 for h in histories) >= 2, f"ASHA stopped fewer than two trials early: {histories}"
    assert any("test_accuracy" in c.data.metrics for c in children)
    board = [float(ln.split("val_loss ")[1].split()[0]) for ln in out.split("== smoke_train")[1].splitlines() if ln.startswith("  ") and " epochs " in ln]
    assert len(board) == 4 and board == sorted(board)  # lowest loss first
    for c in children:  # each trial's best_val_loss is its running minimum
        losses = [m.value for m in sorted(client.get_metric_history(c.info.run_id, "val_loss"), key=lambda m: m.step)]
        best = [m.value for m in sorted(client.get_metric_history(c.info.run_id, "best_val_loss"), key=lambda m: m.step)]
        assert best == pytest.approx([min(losses[:i + 1]) for i in range(len(losses))])


def test_peft_sweep_on_real_minilm(tmp_path, ray_address):
    """PEFT methods on real pretrained weights through the sweep engine (small)."""
    text = (ROOT / "sweeps" / "peft_cpu.py").read_text()
    for old, new in (('"n_train": 2000', '"n_train": 80'), ('"n_test": 2000', '"n_test": 40'), ('"max_len": 128', '"max_len": 48'),
                     ('"epochs": 2', '"epochs": 1'), ('name="peft_cpu"', 'name="peft_small"'),
                     ('["lora", "prompt_tuning", "p_tuning", "prefix_tuning"]', '["lora", "prompt_tuning", "prefix_tuning"]')):
        assert old in text
        text = text.replace(old, new)
    sweep_file = tmp_path / "peft_small.py"
    sweep_file.write_text(text)
    out = run_sweep(tmp_path, sweep_file, address=ray_address)
    assert "== peft_small: 3 trials, 0 errored ==" in out
    client, parents, children = child_runs(tmp_path, "peft_small")
    assert sorted(c.data.params["peft"] for c in children) == ["lora", "prefix_tuning", "prompt_tuning"]
    for c in children:
        assert c.data.tags["family"] == "hf"
        assert 0 < c.data.metrics["trainable_params"] < c.data.metrics["total_params"]
    builds = (tmp_path / "cache" / "builds.log").read_text().splitlines()
    assert [b.split("-")[0] for b in builds] == ["data", "hf"]  # read and tokenised once for the three trials


def test_mlflow_models_serve_answers_what_predict_does(smoke_store):
    """The sweep's champion from the Model Registry behind `mlflow models serve` (a real server on a
    free port): two reviews POSTed to /invocations get predict's labels and probabilities."""
    import json
    import os
    import signal
    import urllib.request

    from helpers import SERVER_ENV, wait_for

    tmp_path, _ = smoke_store
    uri, champion = f"sqlite:///{tmp_path}/mlflow.db", "models:/imdb_ray-smoke@champion"
    reviews = ["One of the best films I have seen, moving and funny.", "Dull, far too long, and badly acted."]
    (tmp_path / "two.txt").write_text("\n".join(reviews) + "\n")
    proc = subprocess.run([sys.executable, "-m", "imdb_ray", "predict", champion, "--file", str(tmp_path / "two.txt"),
                           "--out", str(tmp_path / "two.jsonl"), "--tracking-uri", uri], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    port = free_port()
    env = {**SERVER_ENV, "MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    server = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", champion, "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/ping"), timeout=120, what="mlflow models serve")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                         data=json.dumps({"dataframe_records": [{"text": t} for t in reviews]}).encode(),
                                         headers={"Content-Type": "application/json"})
        served = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert [s["label"] for s in served] == [e["label"] for e in expected]
    assert [s["prob_positive"] for s in served] == pytest.approx([e["prob_positive"] for e in expected], abs=1e-5)
    assert [s["prob_negative"] for s in served] == pytest.approx([e["prob_negative"] for e in expected], abs=1e-5)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)")
def test_mlflow_ui_shows_the_sweep_in_chromium(smoke_store):
    """`python -m imdb_ray ui` in a real headless browser: the parent sweep run, its nested trials,
    MLflow's compare view of the trials with their metrics, and the registered model with its
    `champion` alias. Screenshots go to results/ under `make record`, else beside the test's store."""
    import json
    import os

    from playwright.sync_api import sync_playwright

    tmp_path, _ = smoke_store
    shots = ROOT / "results" if os.environ.get("IMDB_RAY_RECORD_RESULTS") == "1" else tmp_path
    client, parents, children = child_runs(tmp_path, "smoke")
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "imdb_ray", "ui", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                           "--port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    exp_id = parents[0].info.experiment_id
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=flags)
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            for _ in range(60):  # the server takes a few seconds to start
                try:
                    page.goto(f"{base}/#/experiments/{exp_id}/runs", timeout=5000)
                    break
                except Exception:
                    import time

                    time.sleep(1)
            page.get_by_text("sweep:smoke").wait_for(timeout=60000)
            if page.get_by_role("button", name="Close").count():
                page.get_by_role("button", name="Close").first.click()  # MLflow's assistant side panel
            parent_row = page.locator("[role=row]", has_text="sweep:smoke").first
            parent_row.locator('button[data-component-id*="runnamecellrenderer"]').first.click()  # expand the nested runs
            names = [c.info.run_name for c in children]
            for name in names:
                page.get_by_text(name, exact=True).first.wait_for(timeout=30000)
            page.screenshot(path=str(shots / "mlflow_ui_sweep.png"))

            ids = json.dumps([c.info.run_id for c in children])
            page.goto(f'{base}/#/compare-runs?runs={ids}&experiments=["{exp_id}"]')
            page.get_by_text("val_accuracy").first.wait_for(timeout=60000)
            page.set_viewport_size({"width": 1500, "height": 3000})  # the page scrolls inside: grow it to show the metrics
            page.wait_for_timeout(3000)
            body = page.inner_text("body")
            assert f"Comparing {len(children)} Runs" in body
            assert all(name in body for name in names)
            missing = [m for m in ("val_accuracy", "best_val_accuracy", "train_loss", "device_seconds") if m not in body]
            assert not missing, (missing, body[-3000:])
            page.screenshot(path=str(shots / "mlflow_ui_compare.png"))

            page.set_viewport_size({"width": 1500, "height": 900})
            page.goto(f"{base}/#/models/imdb_ray-smoke")  # the Model Registry: the sweep's champion
            page.get_by_text("champion").first.wait_for(timeout=60000)
            page.wait_for_timeout(1000)
            body = page.inner_text("body")
            assert "imdb_ray-smoke" in body and "Version 1" in body, body[-3000:]
            page.screenshot(path=str(shots / "mlflow_ui_registry.png"))
            browser.close()
    finally:
        import os
        import signal

        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


def test_test_only_evaluates_the_trials_left_out(smoke_store):
    """Last in this module: it adds test results to the shared smoke store. Raising test_top after the
    sweep, `--test-only` evaluates the trials without a test result and skips the three that have one."""
    tmp_path, _ = smoke_store
    variant = tmp_path / "smoke_all.py"
    variant.write_text((ROOT / "sweeps" / "smoke.py").read_text().replace("num_samples=6,", "num_samples=6, test_top=6,"))
    trial_dirs = sorted(p.name for p in (tmp_path / "ray" / "smoke").glob("trial_*"))
    out = run_sweep(tmp_path, variant, "--test-only")
    assert "== smoke: 3 trial(s) evaluated on test now, 3 had been before ==" in out
    client, parents, children = child_runs(tmp_path, "smoke")
    assert all("test_accuracy" in c.data.metrics for c in children)
    assert all("test_predictions.csv" in {a.path for a in client.list_artifacts(c.info.run_id)} for c in children)
    assert sum(c.data.tags.get("best_trial") == "true" for c in children) == 1
    assert len(parents) == 1 and len(children) == 6  # no new sweep run, no new trials
    assert sorted(p.name for p in (tmp_path / "ray" / "smoke").glob("trial_*")) == trial_dirs
