"""PEFT methods on DeBERTa-v3-base: method x LoRA rank x learning rate x virtual tokens, Optuna + ASHA.
Written for a GPU cluster (small trials share a GPU four ways):

    python -m imdb_ray sweep sweeps/peft.py --address auto --storage s3://BUCKET/imdb_ray

One model, so no branches: `lora_r` / `lora_alpha` only matter when peft == "lora" and
`num_virtual_tokens` only for the prompt methods, yet every trial samples all of them (branches are
per model; see README: conditional spaces). Prefix tuning is not
offered: DeBERTa's attention takes no past key/values, and validation would refuse it.
"""
from ray import tune

from imdb_ray.sweep import Sweep

sweep = Sweep(
    name="peft",
    space={
        "model": "deberta_v3",
        "peft": tune.choice(["lora", "prompt_tuning", "p_tuning"]),
        "lora_r": tune.choice([4, 8, 16, 32]),
        "lora_alpha": 16,
        "num_virtual_tokens": tune.choice([10, 20, 50]),
        "lr": tune.loguniform(1e-5, 5e-3),
        "recipe": "tuned",
        "epochs": 3,
        "batch_size": 32,
        "max_len": 512,
        "truncation": "head+tail",
    },
    metric="val_accuracy", mode="max",
    search="optuna", scheduler="asha", grace_period=1, reduction_factor=2,
    num_samples=24,
    workers_per_trial=1, cpus_per_worker=2, gpus_per_worker=0.25,  # trainer "auto": one worker, so the loop runs in the trial's own process
)
