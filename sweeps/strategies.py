"""R-Drop alpha and SupCon temperature/weight over a classic model (BiGRU) and a pretrained one
(DistilBERT with LoRA), Optuna + ASHA. Sized for a GPU box; `--num-samples 4` for a taste.

    python -m imdb_ray sweep sweeps/strategies.py
"""
from ray import tune

from imdb_ray.sweep import Sweep

sweep = Sweep(
    name="strategies",
    space={
        "model": {
            "gru": {"lr": tune.loguniform(3e-4, 3e-3), "hidden": 128},
            "distilbert": {"lr": tune.loguniform(1e-4, 1e-3), "peft": "lora", "lora_r": 8},
        },
        # the strategies are losses: shared by both models
        "rdrop_alpha": tune.choice([0.0, 0.5, 1.0, 2.0]),     # 0 = off
        "supcon_weight": tune.choice([0.0, 0.1, 0.3]),       # 0 = off
        "supcon_tau": tune.loguniform(0.05, 0.5),
        "epochs": 4,
        "max_len": 256,
    },
    metric="val_accuracy", mode="max",
    search="optuna", scheduler="asha", grace_period=1, reduction_factor=2,
    num_samples=32,
    workers_per_trial=1, cpus_per_worker=2, gpus_per_worker=0.5,  # trainer "auto": one worker, so the loop runs in the trial's own process
)
