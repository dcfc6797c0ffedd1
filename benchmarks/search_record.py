"""The curve table the search benchmark replays (benchmarks/search_efficiency.py --record).

72 configs over three families that learn at different speeds (cnn, gru, attention_lstm) x 3 learning rates x
2 widths x 2 dropouts x frozen or trained word vectors, each trained 6 epochs by the one training loop on the same ~7,900 real
IMDB training reviews (200 words each at most), training seed 0; 16 of the narrow ones (width 32: the wide ones cost 3-6 times as much) again with
seed 1, so the table knows its own seed noise. After every epoch the model is evaluated on a movie-grouped validation set of ~4,100
reviews (the split a sweep selects on: binomial standard error <= 0.6 pt at 85 %) and on a fixed subset of 5,000 official test
reviews (what a user finally gets from the config). Per epoch the table keeps the validation metrics, every
validation probability (uint8: paired tests on the same reviews), which test reviews were right (bits), the
test accuracy, and the wall seconds a trial spends on the epoch (training + validation, not the extra test
pass). Runs are appended to results/search_curves.jsonl.gz as they finish: a cut run keeps what it measured,
and the next --record runs only what is missing.
"""
from __future__ import annotations

import base64
import gzip
import itertools
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "results" / "search_curves.jsonl.gz"
DATA = {"n_train": 12000, "val_fraction": 0.34, "val_split": "group", "n_test": 5000, "max_len": 200, "embed_dim": 64,
        "w2v_epochs": 3, "batch_size": 64, "epochs": 6, "split_seed": 0, "w2v_workers": 1}
LRS = [3e-4, 1e-3, 3e-3]  # 1e-2 was dropped to keep the table within 3 hours of this 2-core machine
WIDTH = {"cnn": "num_filters", "gru": "hidden", "attention_lstm": "hidden"}
WIDTHS = [32, 128]
# the full product, so a replayed search space (each key's recorded values as choices) holds only recorded configs
VARIANTS = [{"dropout": d, "freeze_embeddings": f} for d in (0.2, 0.5) for f in (False, True)]
SECOND_SEEDS = 16  # narrow configs (width 32) trained again with seed 1


def configs() -> list[dict]:
    """The table's configs, in a fixed order (families interleaved, so a partial table covers all three)."""
    per_family = {m: [{"model": m, "lr": lr, WIDTH[m]: w, **v} for lr, w, v in itertools.product(LRS, WIDTHS, VARIANTS)]
                  for m in WIDTH}
    return [c for group in zip(*per_family.values()) for c in group]


def runs() -> list[tuple[dict, int]]:
    """(config, training seed) for every run of the table."""
    first = [(c, 0) for c in configs()]
    narrow = [c for c in configs() if c[WIDTH[c["model"]]] == min(WIDTHS)]
    # a stride prime to 36 walks families, rates and variants out of step: a spread, not a pattern
    return first + [(narrow[7 * k % len(narrow)], 1) for k in range(SECOND_SEEDS)]


def run_key(config: dict, seed: int) -> str:
    return json.dumps({**config, "seed": seed}, sort_keys=True)


def load_table(path: Path = TABLE) -> list[dict]:
    """Every run recorded so far (a gzip of JSON lines, one member per append)."""
    if not path.exists():
        return []
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def append_run(row: dict, path: Path = TABLE) -> None:
    with gzip.open(path, "at") as f:
        f.write(json.dumps(row) + "\n")


def excerpt(rows: list[dict], keep: dict, reviews: int) -> list[dict]:
    """Seed-0 runs whose config has every `keep` key at one of its listed values, cut to their first `reviews`
    validation and test reviews (accuracies recomputed on those): a small real table for fast replays."""
    import numpy as np

    out = []
    for row in rows:
        if row["seed"] != 0 or "epochs" not in row or any(row["config"].get(k) not in v for k, v in keep.items()):
            continue
        labels = np.array([int(c) for c in row["val_labels"][:reviews]])
        epochs = []
        for e in row["epochs"]:
            probs = np.frombuffer(base64.b64decode(e["val_probs"]), dtype=np.uint8)[:reviews]
            right = np.unpackbits(np.frombuffer(base64.b64decode(e["test_right"]), dtype=np.uint8))[:reviews]
            epochs.append({"epoch": e["epoch"], "seconds": e["seconds"], "val_accuracy": float(((probs >= 128) == labels).mean()), "test_accuracy": float(right.mean()),
                           "val_probs": base64.b64encode(probs.tobytes()).decode(),
                           "test_right": base64.b64encode(np.packbits(right).tobytes()).decode()})
        out.append({**row, "epochs": epochs, "val_labels": row["val_labels"][:reviews], "n_val": reviews, "n_test": reviews})
    return out


def record_one(config: dict, seed: int, cache_dir: str) -> dict:
    """Train one run to its last epoch, evaluating val and the test subset after each epoch."""
    import numpy as np
    import torch

    from imdb_ray.config import TrialConfig
    from imdb_ray.train import evaluate, load_trial_data, make_loaders, train

    torch.set_num_threads(1)
    cfg = TrialConfig.from_flat({**DATA, **config, "seed": seed, "cache_dir": cache_dir, "device": "cpu"})
    dataset = load_trial_data(cfg)
    loaders, _, _ = make_loaders(cfg, dataset)
    held: list = []
    epochs: list[dict] = []

    def capture(model):  # the loop's own model, to evaluate it after each epoch
        held.append(model)
        return model

    def on_epoch(metrics: dict, _ckpt) -> None:
        model = held[0]
        start = time.perf_counter()
        val, val_probs = evaluate(model, loaders["val"], torch.device("cpu"), "val")
        val_seconds = time.perf_counter() - start
        test, test_probs = evaluate(model, loaders["test"], torch.device("cpu"), "test")
        right = ((test_probs >= 0.5).astype(np.int64) == dataset.test.labels)
        epochs.append({"epoch": metrics["epoch"], **{k: round(v, 6) for k, v in val.items()},
                       "test_accuracy": round(test["test_accuracy"], 6), "seconds": round(metrics["epoch_seconds"] + val_seconds, 3),
                       "val_probs": base64.b64encode(np.round(val_probs * 255).astype(np.uint8).tobytes()).decode(),
                       "test_right": base64.b64encode(np.packbits(right).tobytes()).decode()})

    train(cfg, dataset=dataset, on_epoch=on_epoch, wrap_model=capture, progress=False)
    return {"key": run_key(config, seed), "config": config, "seed": seed, "epochs": epochs,
            "val_labels": "".join(map(str, dataset.val.labels.tolist())), "n_val": len(dataset.val), "n_test": len(dataset.test)}


def _work(task: tuple[dict, int, str]) -> dict:
    config, seed, cache_dir = task
    try:
        return record_one(config, seed, cache_dir)
    except Exception as e:  # a diverging lr is data for the table, not a crash of the recording
        return {"key": run_key(config, seed), "config": config, "seed": seed, "error": f"{type(e).__name__}: {e}"[:300]}


def record(budget_s: float, workers: int, cache_dir: str) -> None:
    """Record the missing runs, `workers` at a time (one torch thread each), until done or `budget_s` is spent."""
    import concurrent.futures as cf
    import multiprocessing

    done = {r["key"] for r in load_table()}
    todo = [(c, s, cache_dir) for c, s in runs() if run_key(c, s) not in done]
    print(f"[record] {len(done)} of {len(runs())} runs in {TABLE.name}; {len(todo)} to go, {workers} at a time, "
          f"budget {budget_s:.0f} s", flush=True)
    if todo:  # the split, vocabulary and word vectors once, before the workers read them from the cache
        from imdb_ray.config import TrialConfig
        from imdb_ray.train import load_trial_data, make_loaders

        cfg = TrialConfig.from_flat({**DATA, **todo[0][0], "cache_dir": cache_dir})
        make_loaders(cfg, load_trial_data(cfg))
    start = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending, queue = set(), list(todo)
        while queue or pending:
            while queue and len(pending) < workers and time.perf_counter() - start < budget_s:
                pending.add(pool.submit(_work, queue.pop(0)))
            if not pending:
                break
            finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                row = future.result()
                append_run(row)
                done.add(row["key"])
                curve = [e["val_accuracy"] for e in row.get("epochs", [])]
                print(f"[record {len(done)}/{len(runs())}, {time.perf_counter() - start:.0f} s] {row['config']} seed {row['seed']}: "
                      + (row["error"] if "error" in row else " ".join(f"{v:.4f}" for v in curve)), flush=True)
    print(f"[record] {len(done)} of {len(runs())} runs recorded", flush=True)
