"""Cluster: the launcher configs pass Ray's own schema check, GPU fractions map onto Ray resources,
and a sweep on a simulated 2-node cluster spreads its trials and survives losing a node."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imdb_ray.sweep import Sweep, load_sweep
from imdb_ray.sweep.runner import scaling_config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from cluster_sim import simulated_cluster, sweep_command, trial_placement, wait_to_kill  # noqa: E402


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


def test_cloud_config_shape():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head, worker = config["available_node_types"]["head"], config["available_node_types"]["gpu_worker"]
    assert head["resources"] == {"CPU": 0}  # the head runs the driver, never a trial
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1 and config["idle_timeout_minutes"] > 0
    assert any(".[gpu]" in c for c in config["setup_commands"])
    assert "IMDB_RAY_STORAGE=s3://" in " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert config["file_mounts"] == {"~/imdb_ray": "."}


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
    assert load_sweep(ROOT / "sweeps" / "cluster_sim.py").gpus_per_worker == 0.5


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
    moved = [t for t, ns in placement.items() if ns[0] == lost.node_id]
    assert moved and all(placement[t][-1] == nodes[0].node_id for t in moved)  # finished on the surviving node
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("cluster_sim")
    for run in client.search_runs([exp.experiment_id], "tags.`mlflow.parentRunId` != ''"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps == [1, 2, 3, 4], f"resumed trials repeat or skip epochs: {steps}"
    # the driver built the shared preprocessing once; trials on both nodes read it from the shared path
    builds = (tmp_path / "shared" / "cache" / "builds.log").read_text().splitlines()
    assert sorted(b.split("-")[0] for b in builds) == ["vectors", "words"]
