"""A small sweep for the simulated 2-node cluster (benchmarks/cluster_sim.py, tests/test_cluster.py):
four GRU trials that each ask for half a GPU, so two fit on a one-GPU node. On CPU-only machines the
simulated nodes advertise logical GPUs; the trials reserve them and train on the CPU."""
from ray import tune

from imdb_ray.sweep import Sweep

sweep = Sweep(
    name="cluster_sim",
    space={
        "model": "gru",
        "hidden": 16,
        "lr": tune.grid_search([1e-3, 3e-3, 1e-2, 3e-2]),
        "epochs": 4,
        "batch_size": 32,
        "n_train": 600,
        "n_test": 200,
        "max_len": 64,
        "embed_dim": 16,
        "w2v_epochs": 3,
        "w2v_workers": 1,
    },
    metric="val_accuracy", mode="max",
    search="grid", scheduler="fifo", num_samples=1,
    trainer="direct", cpus_per_worker=1, gpus_per_trial=0.5,
    max_failures=2,
)
