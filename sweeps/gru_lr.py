"""The original study's question, answered properly: how does the GRU's learning rate matter?

The study compared a few hand-picked rates (some diverged) on validation accuracy of an unseeded
split. Here: a grid of rates on a log scale, three seeds each (the spread is part of the answer),
a fixed seeded validation split for selection, ASHA off so every rate trains the same number of
epochs, and the official test split for the one chosen model.

    python -m imdb_ray sweep sweeps/gru_lr.py            # full data: GPU recommended
    python -m imdb_ray sweep sweeps/gru_lr.py --num-samples 1   # one seed per rate
"""
from ray import tune

from imdb_ray.sweep import Sweep

sweep = Sweep(
    name="gru_lr",
    space={
        "model": "gru",
        "lr": tune.grid_search([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]),
        "seed": tune.grid_search([0, 1, 2]),
        "hidden": 128,
        "epochs": 5,
        "max_len": 256,
        "grad_clip": 1.0,
    },
    metric="val_accuracy", mode="max",
    search="grid", scheduler="fifo",
    num_samples=1,
    trainer="direct", cpus_per_worker=1,
)
