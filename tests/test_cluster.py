"""Cluster: the launcher configs pass Ray's own schema check, every command the launcher runs on a host
finds the project's ray, GPU fractions map onto Ray resources, and a sweep on a simulated 2-node
cluster spreads its trials and survives losing a node."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from imdb_ray.sweep import Sweep, load_sweep
from imdb_ray.sweep.trial import scaling_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from cluster_sim import EPOCHS, simulated_cluster, sweep_command, trial_placement, wait_to_kill  # noqa: E402


def ray_up_check(config: dict) -> None:
    """What `ray up` does to a config before it touches a cloud: fill defaults, validate the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-local.yaml"])
def test_cluster_configs_pass_rays_validation(name):
    import jsonschema

    config = yaml.safe_load((ROOT / name).read_text())
    ray_up_check(config)
    typo = {**config, "idle_timeout_minute": 5}
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        ray_up_check(typo)
    text = (ROOT / name).read_text().lower()
    assert "aws_secret" not in text and "password" not in text  # no credentials in the file


def launcher_shell(command: str, home: Path) -> subprocess.CompletedProcess:
    """A command as Ray's launcher runs it on a host over SSH (its own wrapper: `bash --login -i`,
    `source ~/.bashrc`), with a login environment that knows nothing of the project."""
    from ray.autoscaler._private.command_runner import _with_interactive

    return subprocess.run(" ".join(_with_interactive(command)), shell=True, capture_output=True, text=True, timeout=60,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin", "USER": "imdb_ray", "TERM": "dumb"})


def test_every_command_the_launcher_runs_on_a_host_finds_the_projects_ray(tmp_path):
    """cluster-local.yaml, on a host faked without SSH: the synced repository's `make install` makes a
    venv of stubs that record their calls; then the setup and start commands, and what the launcher and
    the README run later (`ray stop` at `ray down`, `ray exec ... ray get-auth-token`), each in the
    launcher's own shell. Each must reach the venv's ray (the bug: `ray down` left Ray running)."""
    config = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
    home, calls = tmp_path / "home", tmp_path / "calls.log"
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for tool in ("ray", "python", "mlflow"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "$0 $*" >> {calls}\n')
        (stubs / tool).chmod(0o755)
    (home / "imdb_ray").mkdir(parents=True)  # file_mounts: the repository, synced
    (home / "imdb_ray" / "Makefile").write_text(f"install:\n\tmkdir -p .venv && cp -r {stubs} .venv/bin\n")
    venv_ray = f"{home}/imdb_ray/.venv/bin/ray"
    assert launcher_shell("ray stop", home).returncode != 0  # before setup: no ray (the test can see the bug)
    shared = str(tmp_path / "shared")
    for command in config["setup_commands"] + config["head_start_ray_commands"]:
        result = launcher_shell(command.replace("/mnt/shared/imdb_ray", shared), home)
        assert result.returncode == 0, (command, result.stdout[-1000:], result.stderr[-1000:])
    for command in config["setup_commands"]:  # `ray up` again (an update): setup is idempotent
        assert launcher_shell(command, home).returncode == 0
    for command in ("ray stop", "ray get-auth-token", "python -m imdb_ray sweep sweeps/smoke.py --address auto"):
        result = launcher_shell(command, home)
        assert result.returncode == 0, (command, result.stderr[-1000:])
    lines = calls.read_text().splitlines()
    assert f"{venv_ray} start --head --port=6379 --dashboard-host=127.0.0.1 --autoscaling-config=~/ray_bootstrap_config.yaml" in lines
    assert lines[-3:] == [f"{venv_ray} stop", f"{venv_ray} get-auth-token",
                          f"{home}/imdb_ray/.venv/bin/python -m imdb_ray sweep sweeps/smoke.py --address auto"]
    assert (home / ".bashrc").read_text().count("imdb_ray/.venv/bin") == 1


def test_cloud_config_shape():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head, worker = config["available_node_types"]["head"], config["available_node_types"]["gpu_worker"]
    assert head["resources"] == {"CPU": 0}  # the head runs the driver, never a trial
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1 and config["idle_timeout_minutes"] > 0
    assert any(".[gpu]" in c for c in config["setup_commands"])
    assert "IMDB_RAY_STORAGE=s3://" in " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert config["file_mounts"] == {"~/imdb_ray": ".", "~/.ray/auth_token": "~/.ray/auth_token"}


def test_gpu_fractions_map_onto_ray_resources():
    small = Sweep(name="x", space={"model": "gru"}, trainer="direct", gpus_per_trial=0.25, num_samples=16).validate()
    assert small.trial_resources() == {"CPU": 1.0, "GPU": 0.25}
    assert small.concurrency({"CPU": 16, "GPU": 2}) == 8  # four per GPU
    assert small.concurrency({"CPU": 4, "GPU": 2}) == 4  # CPUs run out first
    big = Sweep(name="x", space={"model": "gru"}, workers_per_trial=4, gpus_per_trial=4, cpus_per_worker=2).validate()
    config = scaling_config(big)
    assert config.num_workers == 4 and config.use_gpu and config.resources_per_worker == {"CPU": 2, "GPU": 1}
    assert big.concurrency({"CPU": 64, "GPU": 8}) == 2
    with pytest.raises(Exception, match="not both"):
        Sweep(name="x", space={"model": "gru"}, gpus_per_trial=1, gpus_per_worker=0.5).validate()
    cluster_sim = load_sweep(ROOT / "sweeps" / "cluster_sim.py")
    assert cluster_sim.gpus_per_worker == 0.5 and cluster_sim.space["epochs"] == EPOCHS


def test_a_local_ray_trims_ray_trains_per_trial_machinery_and_a_cluster_keeps_its_defaults(monkeypatch):
    """The environment a local Ray's processes inherit (set before ray.init, so Train's controller reads it): no
    preemption watcher, a 0.2-s poll, no worker processes started ahead for tasks; a value the user set wins;
    joining a cluster changes nothing."""
    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

    import imdb_ray.sweep.runner as runner

    seen = []
    monkeypatch.setattr(runner.ray, "init", lambda **kw: seen.append({k: runner.os.environ.get(k) for k in runner.LOCAL_RAY_ENV}))
    for key in runner.LOCAL_RAY_ENV:  # set, then removed: monkeypatch puts back what was there (what _start_ray sets too)
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    runner._start_ray("10.0.0.1:6379", dashboard=False)
    assert seen[-1] == {key: None for key in runner.LOCAL_RAY_ENV}
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "1.0")
    runner._start_ray(None, dashboard=False)
    assert seen[-1] == {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0",
                        "RAY_prestart_worker_first_driver": "0"}
    assert set(runner.LOCAL_RAY_TRAIN_ENV) <= ENV_VARS_TO_PROPAGATE  # Train hands them on to its controller and workers


@pytest.mark.slow
def test_sweep_on_two_nodes_survives_losing_one(tmp_path):
    from mlflow.tracking import MlflowClient

    with simulated_cluster(2) as (cluster, nodes):
        proc = subprocess.Popen(sweep_command(cluster.address, ROOT / "sweeps" / "cluster_sim.py", tmp_path), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lost = nodes[1]
        wait_to_kill(proc, tmp_path / "mlflow.db", lost.node_id)  # both trials there are mid-run, with a checkpoint
        cluster.remove_node(lost, allow_graceful=False)  # its raylet and every trial process on it die
        out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-4000:]
    assert "== cluster_sim: 4 trials, 0 errored ==" in out
    placement = trial_placement(tmp_path / "shared" / "ray" / "cluster_sim")
    first_nodes = {nodes_[0] for nodes_ in placement.values()}
    assert first_nodes == {nodes[0].node_id, lost.node_id}, "trials were not spread over both nodes"
    # every trial cut off on the lost node finished on the surviving one (one may have ended there before the kill)
    moved = [t for t, ns in placement.items() if ns[0] == lost.node_id and ns.count(lost.node_id) < EPOCHS]
    assert moved and all(placement[t][-1] == nodes[0].node_id for t in moved), placement
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("cluster_sim")
    for run in client.search_runs([exp.experiment_id], "tags.`mlflow.parentRunId` != ''"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps == list(range(1, EPOCHS + 1)), f"resumed trials repeat or skip epochs: {steps}"
    # the driver built the shared preprocessing once; trials on both nodes read it from the shared path
    builds = (tmp_path / "shared" / "cache" / "builds.log").read_text().splitlines()
    assert sorted(b.split("-")[0] for b in builds) == ["data", "vectors", "words"]


def test_gpu_check_takes_each_cards_own_peak():
    """MFU's denominator: a PCIe or NVL card is not counted at the peak of the SXM card it shares a name with."""
    from gpu_check import peak_tflops

    assert peak_tflops("NVIDIA H100 80GB HBM3") == peak_tflops("NVIDIA H200") == 989
    assert peak_tflops("NVIDIA H100 PCIe") == 756
    assert peak_tflops("NVIDIA H100 NVL") == peak_tflops("NVIDIA H200 NVL") == 835
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312 and peak_tflops("NVIDIA L40S") == 362
    assert peak_tflops("NVIDIA GeForce GTX 1080") is None


def test_gpu_check_plan_is_sound_without_a_gpu():
    """benchmarks/gpu_check.py --dry-run: every check listed, every model config and command it will use
    built or validated here; without --dry-run on a machine with no CUDA it says so and runs nothing."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and "plan: OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    for check in ("environment", "classic gru @ 512", "bert-base @ 256", "deberta-v3-base @ 512", "modernbert-base @ 512",
                  "real modernbert-base bucketed", "real bert-base plain", "packing 8 per GPU", "ray_train nccl", "lora int8",
                  "lora nf4", "unsloth"):
        assert check in proc.stdout
    import torch

    if not torch.cuda.is_available():
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", "/nonexistent/x.md"],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 2 and "no CUDA device here" in proc.stderr


def test_gpu_packing_from_a_measured_peak_with_cuda_faked(monkeypatch):
    """The planner's arithmetic, the dry-run's peak measurement (CUDA calls faked at the edge) and its advice."""
    import torch

    from imdb_ray.sweep.cost import ModelCost, cost_lines
    from imdb_ray.sweep.packing import measure_peak_bytes, trials_per_gpu

    gib = 2**30
    assert trials_per_gpu(int(0.45 * gib), 139 * gib) == 8  # a GRU on an H200: capped at 8
    assert trials_per_gpu(20 * gib, 80 * gib) == 2  # 20 x 1.5 + 0.5 GiB each
    assert trials_per_gpu(100 * gib, 80 * gib) == 1  # never fewer than one
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3 * gib)
    assert measure_peak_bytes(lambda: calls.append("run")) == 3 * gib and calls == ["reset", "run"]
    sweep = Sweep(name="x", space={"model": "gru"}, gpus_per_worker=0.125).validate()
    lines = cost_lines(sweep, [ModelCost("gru", 8, 4, 10.0, peak_bytes=20 * gib)], 0.0, 8, gpu_bytes=80 * gib)
    assert "2 trial(s) per 80 GiB GPU" in lines[-1] and "gpus_per_worker=0.5" in lines[-1]
    assert "this sweep's 0.125 packs 8: more than fit" in lines[-1]


@pytest.mark.slow
def test_a_packed_trial_out_of_gpu_memory_is_retried_alone_with_a_larger_share(tmp_path, monkeypatch):
    """Packing's guard, with one logical GPU declared to Ray and CUDA's out-of-memory error raised at the edge:
    the trial that fits keeps its quarter GPU; the one that ran out is retried from Tune with half a GPU; one
    that runs out again fails alone. A ray_train trial gives its grown share to its Train workers."""
    import ray
    import torch
    from ray import tune

    from imdb_ray.sweep import trial as trial_module
    from imdb_ray.sweep.callbacks import GrowGpuShareOnOOM
    from imdb_ray.sweep.packing import SHARE_KEY, ran_out_of_gpu_memory

    def packed(config):
        share = tune.get_context().get_trial_resources().required_resources.get("GPU", 0)
        if share < config["needs"]:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (share {share})")
        tune.report({"share": share})

    from ray.cluster_utils import Cluster

    # a Ray of its own with one logical GPU, joined rather than started by ray.init: a Ray that ray.init
    # starts in this process and stops again broke the session cluster's later sweeps (actors "cancelled
    # before they started")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 1, "include_dashboard": False})
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        grow = GrowGpuShareOnOOM(0.25, 0.5, direct=True)
        results = tune.Tuner(tune.with_resources(packed, {"CPU": 0.5, "GPU": 0.25}),
                             param_space={"needs": tune.grid_search([0.25, 0.5, 1.0])},
                             run_config=tune.RunConfig(storage_path=str(tmp_path), callbacks=[grow], verbose=0,
                                                       failure_config=tune.FailureConfig(max_failures=1))).fit()
    finally:
        ray.shutdown()
        cluster.shutdown()
    by_need = {r.config["needs"]: r for r in results}
    assert by_need[0.25].error is None and by_need[0.25].metrics["share"] == 0.25  # it fit: never touched
    assert by_need[0.5].error is None and by_need[0.5].metrics["share"] == 0.5  # retried with twice the share
    assert isinstance(by_need[1.0].error, Exception) and "CUDA out of memory" in str(by_need[1.0].error)
    assert sorted(grow.grown.values()) == [0.5, 0.5]  # 0.25 -> 0.5 once each; the second failure was final
    assert not ran_out_of_gpu_memory("Failure # 1\nCUDA out of memory\nFailure # 2\nMemoryError: host RAM")

    captured = []

    class FakeTrainer:  # what make_trial's ray_train function hands Ray Train, without starting workers
        def __init__(self, *args, scaling_config, **kwargs):
            captured.append(scaling_config.resources_per_worker)

        def fit(self):
            pass

    monkeypatch.setattr(trial_module, "sweep_torch_trainer", lambda: FakeTrainer)
    monkeypatch.setattr(trial_module.tune, "get_context", lambda: SimpleNamespace(get_experiment_name=lambda: "x",
                                                                                 get_trial_id=lambda: "t"))
    ray_train = trial_module.make_trial(Sweep(name="x", space={"model": "gru"}, trainer="ray_train", gpus_per_worker=0.25,
                                              cpus_per_worker=2).validate(), str(tmp_path))
    ray_train({"model": "gru"})
    ray_train({"model": "gru", SHARE_KEY: 0.5})
    assert captured == [{"CPU": 2, "GPU": 0.25}, {"CPU": 2, "GPU": 0.5}]
