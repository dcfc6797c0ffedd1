"""Tiny sweep for the tests: real IMDB reviews, small GRU/CNN, 2 epochs, ASHA. About a minute on 2 CPUs."""
from ray import tune

from imdb_ray.sweep import Sweep

sweep = Sweep(
    name="smoke",
    space={
        "model": {"gru": {"hidden": 16}, "cnn": {"num_filters": 16}},  # each model's own keys
        "lr": tune.loguniform(1e-3, 3e-2),  # shared: searched separately for each model
        "epochs": 3,
        "batch_size": 32,
        "n_train": 600,
        "n_test": 200,
        "max_len": 64,
        "embed_dim": 16,
        "w2v_epochs": 3,
        "w2v_workers": 1,
    },
    metric="val_accuracy", mode="max",
    search="optuna", scheduler="asha", grace_period=1, reduction_factor=2,
    num_samples=6,
    trainer="direct",
    cpus_per_worker=0.95,
    confirm_top=1, confirm_seeds=2,  # the winner's config again with seeds 1 and 2
)
