"""Which recipe levers move the classic models (issue 19, item 3): each lever alone against the
classic sweep's base recipe, then all of them together. Validation (movie-grouped, the default)
is what a lever is judged by; test is evaluated once per row, on the restored best epoch, and shown.

    python benchmarks/classic_recipes.py                       # -> results/classic_recipes.md
    python benchmarks/classic_recipes.py --parallel 6 --budget-s 420
    python benchmarks/classic_recipes.py --budget-s 3600 --resume   # on a CPU: an hour a session, rows kept
    python benchmarks/classic_recipes.py --resume --models cnn      # one model's rows (CNN's are the quickest)

Each row is `imdb_ray.train.train` on the full official split. Sized for a GPU, where a row takes
under a minute and several rows share the card; on 2 idle CPU cores most rows have taken 5-17 minutes.
Rows are written as they finish; `--budget-s` begins no row after its time and waits for the rows that have begun
(none is left running or thrown away), so a session keeps what it measured; `--resume` runs only
the rows its table does not have yet (kept in results/classic_recipes.json beside it), on the same device.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the spawned row processes import imdb_ray from this checkout
# The classic sweep's centre: lr 1e-3, 256 words, 100-d skip-gram Word2Vec (5 epochs), early stopping.
BASE = dict(epochs=6, patience=2, lr=1e-3, batch_size=64, seed=0, max_len=256, embed_dim=100, w2v_epochs=5)
LEVERS = {
    "max_len 512": {"max_len": 512},  # a third of the reviews are longer than 256 words
    "embed 300": {"embed_dim": 300},
    "w2v 15 epochs": {"w2v_epochs": 15},
    "head+tail": {"truncation": "head+tail"},  # a review's verdict is often in its last lines
    "weight decay 0.01": {"weight_decay": 0.01},
}
RNN_LEVERS = {"max pooling": {"pooling": "max"}}  # over the unpadded steps, instead of the last state
ALL = {"max_len": 512, "embed_dim": 300, "w2v_epochs": 15, "truncation": "head+tail", "weight_decay": 0.01}
FULL_STUDY = ("gru", "lstm", "cnn")  # every lever alone, then all together
BASE_AND_ALL = ("attention_lstm", "capsule_lstm")  # the base recipe and all levers together


def rows() -> list[tuple[str, str, dict]]:
    """(model, recipe, TrialConfig fields beyond BASE) in the order they run."""
    out = []
    for model in FULL_STUDY:
        out.append((model, "base", {}))
        out += [(model, name, extra) for name, extra in LEVERS.items()]
        if model != "cnn":
            out += [(model, name, extra) for name, extra in RNN_LEVERS.items()]
        out.append((model, "all levers", {**ALL, **({"pooling": "max"} if model != "cnn" else {})}))
    for model in BASE_AND_ALL:
        out += [(model, "base", {}), (model, "all levers", ALL)]
    return out


def pending(done: dict, models: str | None) -> list[tuple[str, str, dict]]:
    """The rows still to run, in order; `models` ("cnn,gru"): only theirs."""
    study = list(dict.fromkeys(model for model, _, _ in rows()))
    chosen = study if not models else [m.strip() for m in models.split(",")]
    unknown = [m for m in chosen if m not in study]
    if unknown:
        sys.exit(f"error: --models: {', '.join(unknown)} not in this study; its models: {', '.join(study)}")
    return [(model, recipe, extra) for model, recipe, extra in rows() if model in chosen and (model, recipe) not in done]


def run_row(model: str, recipe: str, extra: dict, smoke: dict, w2v_workers: int) -> dict:
    from imdb_ray.config import TrialConfig
    from imdb_ray.train import train

    cfg = TrialConfig.from_flat({"model": model, **BASE, **extra, **smoke, "w2v_workers": w2v_workers}).validate()

    def say_epoch(metrics: dict, _checkpoint: str | None) -> None:  # a row runs for minutes: one line per epoch
        print(f"[recipes]        {model} / {recipe}: epoch {metrics['epoch']}/{cfg.epochs} val_accuracy "
              f"{metrics['val_accuracy']:.4f} ({metrics['epoch_seconds']:.0f}s)", flush=True)

    result = train(cfg, evaluate_test=True, progress=False, on_epoch=say_epoch)
    epochs = [h for h in result.history if "epoch_seconds" in h]
    return {"val": result.val["val_accuracy"], "test": result.test["test_accuracy"], "best_epoch": result.best_epoch,
            "epochs": len(epochs), "epoch_s": sum(h["epoch_seconds"] for h in epochs) / len(epochs), "wall_s": result.seconds}


def table(done: dict, device: str, command: str) -> str:
    lines = ["# Classic recipes: one lever at a time", "",
             f"Command: `{command}` on {device}. Full official split: train 22.5k / movie-grouped validation 2.5k /"
             " test 25k; base recipe " + ", ".join(f"{k} {v}" for k, v in BASE.items()) + ". Each lever is judged by"
             " validation against its model's base row; test is shown, evaluated once on the restored best epoch.", "",
             "| model | recipe | val acc | Δ val vs base | test acc | Δ test vs base | best epoch / run | s per epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for model, recipe, _ in rows():
        r = done.get((model, recipe))
        if r is None:
            lines.append(f"| {model} | {recipe} | not run (budget) | | | | | |")
            continue
        if "error" in r:
            lines.append(f"| {model} | {recipe} | failed: {r['error']} | | | | | |")
            continue
        base = done.get((model, "base"), {})
        dv = f"{(r['val'] - base['val']) * 100:+.2f} pt" if "val" in base and recipe != "base" else ""
        dt = f"{(r['test'] - base['test']) * 100:+.2f} pt" if "test" in base and recipe != "base" else ""
        lines.append(f"| {model} | {recipe} | {r['val']:.4f} | {dv} | {r['test']:.4f} | {dt} | {r['best_epoch']} / {r['epochs']}"
                     f" | {r['epoch_s']:.1f} |")
    return "\n".join(lines) + "\n"


def load_done(path: Path, device: str) -> dict:
    """The rows an earlier invocation measured, for --resume (failed rows run again)."""
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
        measured_on, measured = saved["device"], saved["rows"]
    except (ValueError, KeyError, TypeError):
        sys.exit(f"error: --resume: {path} is not a table this script wrote; move it away or run without --resume")
    if measured_on != device:
        sys.exit(f"error: --resume: {path} was measured on {measured_on}, this machine is {device}; "
                 "one table, one device (give another --out)")
    return {tuple(key.split(" / ", 1)): row for key, row in measured.items() if "error" not in row}


def save_done(path: Path, device: str, done: dict) -> None:
    path.write_text(json.dumps({"device": device, "rows": {f"{m} / {r}": row for (m, r), row in done.items()}}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=1, help="rows at once (a GPU holds several)")
    parser.add_argument("--budget-s", type=float, default=None, help="begin no row after this many seconds (rows already running are finished)")
    parser.add_argument("--out", default=str(ROOT / "results" / "classic_recipes.md"))
    parser.add_argument("--smoke", action="store_true", help="tiny data, 1 epoch: checks the script, measures nothing")
    parser.add_argument("--resume", action="store_true", help="keep the rows --out already has; run the others")
    parser.add_argument("--models", default=None, help="only these models' rows, e.g. cnn,gru (default: all)")
    args = parser.parse_args()
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    smoke = {"n_train": 300, "n_test": 100, "epochs": 1} if args.smoke else {}
    # Word2Vec on every core (faster, not bit-reproducible): the rows share four vector sets, built once each
    # under the cache's lock while the other rows of that set wait
    w2v_workers = os.cpu_count() or 1
    command = "python benchmarks/classic_recipes.py" + (f" --parallel {args.parallel}" if args.parallel > 1 else "")
    saved = Path(args.out).with_suffix(".json")
    start, done = time.perf_counter(), load_done(saved, device) if args.resume else {}
    if done:
        print(f"[recipes] --resume: {len(done)} row(s) measured before, kept", flush=True)
    queue, running = pending(done, args.models), {}
    with cf.ProcessPoolExecutor(args.parallel, mp_context=multiprocessing.get_context("spawn")) as pool:

        def start_rows() -> None:  # up to --parallel at once, none begun once the budget is spent
            while queue and len(running) < args.parallel and (args.budget_s is None or time.perf_counter() - start < args.budget_s):
                model, recipe, extra = queue.pop(0)
                running[pool.submit(run_row, model, recipe, extra, smoke, w2v_workers)] = (model, recipe)
                print(f"[recipes] {time.perf_counter() - start:5.0f}s {model} / {recipe}: begun "
                      f"({len(queue)} row(s) after it)", flush=True)

        start_rows()
        while running:  # a row that has begun is waited for: its minutes are not thrown away, nor left running
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                key = running.pop(future)
                try:
                    done[key] = future.result()
                except Exception as e:  # noqa: BLE001 (a failed row is recorded as such; the others go on)
                    done[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
                print(f"[recipes] {time.perf_counter() - start:5.0f}s {key[0]} / {key[1]}: {done[key]}", flush=True)
                Path(args.out).write_text(table(done, device, command))
                save_done(saved, device, done)
            start_rows()
    if queue:
        print(f"[recipes] budget of {args.budget_s:g}s spent: {len(queue)} row(s) not begun; continue with --resume", flush=True)
    Path(args.out).write_text(table(done, device, command))
    print(f"[recipes] -> {args.out}", flush=True)

if __name__ == "__main__":
    main()
