"""What length buckets buy a DDP trial: one epoch of a 2-worker Ray Train run (gloo, one torch thread each) with
each rank's share of the length buckets (`LengthBuckets(shard=...)`, the default) against shuffled rows through
torch's DistributedSampler (what Ray's `prepare_data_loader` made of the loader before), side by side in one run,
alternating, on real IMDB reviews at max_len 512. Each worker runs `train()` with the keywords a sweep's Train
workers pass (`sweep/trial.ddp_hooks`).

    .venv/bin/python benchmarks/ddp_buckets.py
Writes results/ddp_buckets.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "results" / "ddp_buckets.md"
WORKERS, ROUNDS = 2, 3
SETTINGS = {"model": "gru", "n_train": 2000, "n_test": 100, "max_len": 512, "batch_size": 32, "epochs": 1,
            "model_args": {"hidden": 64}, "val_split": "random", "seed": 0}
WAYS = {"length buckets, each rank every 2nd batch (the default)": True,
        "shuffled rows, torch's DistributedSampler (before)": False}


def worker_loop(config: dict) -> None:
    """One Train worker: the loop as a sweep's workers run it, reporting the epoch's training seconds and the real
    tokens and token slots this rank computed."""
    import ray.train

    from imdb_ray.config import TrialConfig
    from imdb_ray.sweep.trial import ddp_hooks, use_assigned_cpus
    from imdb_ray.train import train

    use_assigned_cpus()
    hooks, counts = ddp_hooks(), [0, 0]
    prepare = hooks["wrap_loader"]

    class Counting:  # the prepared loader, counting what this rank computes
        def __init__(self, loader):
            self.loader, self.batch_sampler, self.sampler = loader, loader.batch_sampler, loader.sampler

        def __len__(self):
            return len(self.loader)

        def __iter__(self):
            for inputs, y in self.loader:
                counts[0] += int(inputs["lengths"].sum())
                counts[1] += inputs["input_ids"].numel()
                yield inputs, y

    def report(metrics: dict, _ckpt) -> None:  # Ray Train 2.60 keeps only metrics reported with a checkpoint: a file
        if ray.train.get_context().get_world_rank() == 0:  # DDP keeps the ranks in step: rank 0's epoch is the run's
            Path(config["out"]).write_text(json.dumps({"epoch_seconds": metrics["epoch_seconds"], "real": counts[0],
                                                       "slots": counts[1]}))

    cfg = TrialConfig(**{k: v for k, v in config.items() if k != "out"})
    train(cfg, progress=False, on_epoch=report, **{**hooks, "wrap_loader": lambda loader: Counting(prepare(loader))})


def run_once(config: dict, tmp: str) -> dict:
    from ray.train import RunConfig, ScalingConfig

    from imdb_ray.sweep.ray_compat import sweep_torch_trainer

    out = f"{tmp}/rank0_{time.time_ns()}.json"
    sweep_torch_trainer()(worker_loop, train_loop_config={**config, "out": out},
                          scaling_config=ScalingConfig(num_workers=WORKERS, resources_per_worker={"CPU": 1}),
                          run_config=RunConfig(name=Path(out).stem, storage_path=f"{tmp}/ray")).fit()
    return json.loads(Path(out).read_text())


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    import ray

    from imdb_ray.config import TrialConfig
    from imdb_ray.sweep.runner import LOCAL_RAY_ENV
    from imdb_ray.train import load_trial_data, make_loaders

    with tempfile.TemporaryDirectory(prefix="imdb_ray_ddp_") as tmp:
        base = {**SETTINGS, "cache_dir": f"{tmp}/cache"}
        make_loaders(TrialConfig(**base), load_trial_data(TrialConfig(**base)))  # tokens + Word2Vec, once, before timing
        os.environ.update(LOCAL_RAY_ENV)  # what a local sweep's Ray gets
        ray.init(address="local", num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        seen: dict[str, list[dict]] = {name: [] for name in WAYS}
        try:
            for round_ in range(ROUNDS):
                for name, bucket in WAYS.items():
                    seen[name].append(run_once({**base, "bucket_by_length": bucket}, tmp))
                    m = seen[name][-1]
                    print(f"[ddp] round {round_ + 1}/{ROUNDS} {name}: epoch {m['epoch_seconds']:.1f} s, "
                          f"{m['real'] / m['slots']:.1%} real tokens", file=sys.stderr, flush=True)
        finally:
            ray.shutdown()
    write(seen)


def write(seen: dict[str, list[dict]]) -> None:
    seconds = {name: statistics.median(m["epoch_seconds"] for m in runs) for name, runs in seen.items()}
    bucketed, shuffled = seconds.values()
    lines = ["# Length buckets in a DDP trial (2 Ray Train workers, CPU)", "",
             f"Produced by `.venv/bin/python benchmarks/ddp_buckets.py` on {platform.machine()} with {os.cpu_count()} CPUs: one epoch "
             f"of {SETTINGS['model']} (hidden {SETTINGS['model_args']['hidden']}, max_len {SETTINGS['max_len']}, batch "
             f"{SETTINGS['batch_size']} per worker) on {SETTINGS['n_train']:,} real IMDB reviews less 10 % validation, "
             f"{WORKERS} workers (gloo, one CPU and torch thread each), each way run {ROUNDS} times, alternating. Epoch "
             "seconds: rank 0's training time (validation excluded), the median of the runs; token counts: rank 0's "
             "batches as the collate hands them to the model.", "",
             "| train batches | epoch seconds (each run) | median | real tokens / token slots (rank 0) |",
             "|---|---|---|---|"]
    for name, runs in seen.items():
        m = runs[0]
        each = ", ".join(f"{r['epoch_seconds']:.1f}" for r in runs)
        lines.append(f"| {name} | {each} | {seconds[name]:.1f} | "
                     f"{m['real'] / m['slots']:.1%} |")
    lines += ["", f"Speed-up of the epoch with buckets: **{shuffled / bucketed:.2f}x** (medians)."]
    REPORT.write_text("\n".join(lines) + "\n")
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
