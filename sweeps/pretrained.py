"""Five pretrained encoder families x {native, tuned} recipe x {pretrained, scratch} init, full
fine-tuning on the full official split. Written for a GPU cluster (one GPU per trial):

    python -m imdb_ray sweep sweeps/pretrained.py --address auto --storage s3://BUCKET/imdb_ray

"scratch" is the same architecture with random weights (what the study's "BERT-scratch" should
have meant); "native" is AdamW at a constant rate, "tuned" adds warmup, linear decay, weight decay
0.01 and clipping. A grid, so every cell of the comparison is filled.
"""
from ray import tune

from imdb_ray.sweep import Sweep

sweep = Sweep(
    name="pretrained",
    space={
        "model": tune.grid_search(["bert", "distilbert", "roberta", "deberta_v3", "modernbert"]),
        "recipe": tune.grid_search(["native", "tuned"]),
        "init": tune.grid_search(["pretrained", "scratch"]),
        "lr": 2e-5,
        "epochs": 3,
        "batch_size": 32,
        "max_len": 512,
        "truncation": "head+tail",
    },
    metric="val_accuracy", mode="max",
    search="grid", scheduler="fifo", num_samples=1,
    workers_per_trial=1, cpus_per_worker=4, gpus_per_worker=1,  # trainer "auto": one worker, so the loop runs in the trial's own process
)
