"""The strategies sweep sized for a CPU: R-Drop alpha, SupCon weight and temperature, and the learning
rate over a BiGRU on 5k real IMDB reviews, Optuna + ASHA. About ten minutes on 2 cores.

    python -m imdb_ray sweep sweeps/strategies_cpu.py && python -m imdb_ray report --sweep strategies_cpu
"""
from ray import tune

from imdb_ray.sweep import Sweep

sweep = Sweep(
    name="strategies_cpu",
    space={
        "model": "gru",
        "hidden": 64,
        "rdrop_alpha": tune.choice([0.0, 0.5, 1.0]),      # 0 = off
        "supcon_weight": tune.choice([0.0, 0.1, 0.3]),    # 0 = off
        "supcon_tau": tune.loguniform(0.05, 0.5),
        "lr": tune.loguniform(1e-3, 5e-3),
        "epochs": 3,
        "val_split": "random",  # as recorded in results/strategies_cpu_leaderboard.md (the default is now by movie)
        "n_train": 5000,
        "n_test": 5000,
        "max_len": 200,
        "w2v_workers": 1,
    },
    metric="val_accuracy", mode="max",
    search="optuna", scheduler="asha", grace_period=1, reduction_factor=2,
    num_samples=12,
    trainer="direct", cpus_per_worker=1,
)
