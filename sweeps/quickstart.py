"""The README's main job: a real small sweep on IMDB (4k train reviews, 4k official test reviews).
GRU vs TextCNN vs attention-LSTM, learning rate and width searched by Optuna, ASHA stops the weak
ones early; the top two configs are then confirmed with new seeds. Minutes on a 2-core CPU (what it
printed and took: results/quickstart_cpu.md):

    python -m imdb_ray sweep sweeps/quickstart.py
"""
from ray import tune

from imdb_ray.sweep import Sweep

sweep = Sweep(
    name="quickstart",
    space={
        "model": {  # each model samples only its own keys
            "gru": {"lr": tune.loguniform(3e-4, 3e-3), "hidden": tune.choice([64, 128])},
            "cnn": {"lr": tune.loguniform(3e-4, 3e-3), "num_filters": tune.choice([64, 128])},
            "attention_lstm": {"lr": tune.loguniform(3e-4, 3e-3), "hidden": tune.choice([64, 128])},
        },
        "epochs": 4,
        "batch_size": 64,
        "n_train": 4000,   # train + validation (10% of it, whole movies: the default), seeded
        "n_test": 4000,    # official test split, used once for the best trial
        "max_len": 200,
    },
    metric="val_accuracy", mode="max",
    search="optuna", scheduler="asha", grace_period=1, reduction_factor=2,
    num_samples=8,
    trainer="direct",          # cheap single-process trials; "ray_train" for Ray Train workers
    cpus_per_worker=1,
    test_top=3, ensemble_top=3,       # the top 3 by validation: evaluated once on test, ensembled by `report`
    confirm_top=2, confirm_seeds=2,   # then the top 2 configs again with 2 new seeds each: is the winner luck?
)
