"""How well the sweep engine spends compute: its searchers and schedulers replayed on a recorded curve table.

    .venv/bin/python benchmarks/search_efficiency.py --record --budget-s 3600   # record (resumable; ~3 h on 2 cores in all)
    .venv/bin/python benchmarks/search_efficiency.py                            # replay every method, write the report

1. The table (benchmarks/search_record.py): 72 configs x 6 epochs of real training, per-epoch validation
   predictions on ~2,500 movie-grouped reviews, test accuracy on 5,000, wall seconds; 16 configs twice.
2. Replays (benchmarks/search_replay.py): the real Tuner, searcher and scheduler classes a sweep builds,
   `--seeds` search seeds per method, one trial at a time (deterministic per seed).
3. The report: regret against budget (the grid's best validation accuracy minus the incumbent's, and the
   incumbent config's test accuracy) at 1/16 ... 1 of the grid's cost, in recorded seconds and trial-epochs;
   the share of seeds whose incumbent is tied with the grid's best (paired bootstrap, p > 0.05) at 1/3 of the
   grid's cost; the rank correlation of each epoch's score with a config's final best.
Writes results/search_efficiency.md and results/search_efficiency.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling modules, in spawned processes too
from search_record import DATA, TABLE, load_table, record, runs  # noqa: E402
from search_replay import (Method, curve_key, decode, incumbents, paired_bootstrap_p, replay_many, spearman,  # noqa: E402
                           sweep_space)
from search_replay import replay  # noqa: E402, F401  (the tests replay through this module)

ROOT = Path(__file__).resolve().parent.parent
REPORT, FIGURE = ROOT / "results" / "search_efficiency.md", ROOT / "results" / "search_efficiency.png"
FRACTIONS = [1 / 16, 1 / 8, 1 / 4, 1 / 3, 1 / 2, 1.0]
# the baselines, then one lever at a time from optuna + asha (g1 r2), the engine's defaults before this benchmark
METHODS = [Method("random + fifo", "random", "fifo"), Method("random + asha", "random", "asha"),
           Method("optuna + fifo", "optuna", "fifo"), Method("optuna + asha (g1 r2)", "optuna", "asha"),
           Method("optuna + asha (g2 r2)", "optuna", "asha", grace_period=2),
           Method("optuna + asha per model (g1 r2)", "optuna", "asha", settings={"rungs_per_model": True}),
           Method("optuna + asha 3 brackets (g1 r2)", "optuna", "asha", settings={"brackets": 3})]
# more levers, replayed when asked (--methods all): each costs ~7 minutes of 2 cores for 50 seeds
MORE = [Method("optuna + asha (g1 r3)", "optuna", "asha", reduction_factor=3),
        Method("optuna 5 start-up + asha (g1 r2)", "optuna", "asha", settings={"startup_trials": 5})]
# every replay's arrivals, by method, seed and table: a report after a new lever replays only that lever
CACHE = ROOT / ".cache" / "search_replays.jsonl.gz"
REPLAYS_PER_RAY = 25  # replays per local Ray start (one costs seconds)


def grid(rows: list[dict]) -> dict:
    """Seed-0 runs by config key, decoded; the grid's best (key, epoch) and its cost in seconds and epochs."""
    curves = {curve_key(r["config"]): decode(r) for r in rows if r["seed"] == 0 and "epochs" in r}
    best = max(((k, e["epoch"], e["val_accuracy"]) for k, r in curves.items() for e in r["epochs"]), key=lambda t: t[2])
    return {"curves": curves, "best": best, "seconds": sum(e["seconds"] for r in curves.values() for e in r["epochs"]),
            "epochs": sum(len(r["epochs"]) for r in curves.values())}


def score(g: dict, arrivals: list[dict], unit: str) -> list[dict]:
    """At each budget fraction: regret, the incumbent's test accuracy, and whether it is tied with the grid's best."""
    best_key, best_epoch, best_val = g["best"]
    reference = g["curves"][best_key]["epochs"][best_epoch - 1]["val_probs"]
    labels = g["curves"][best_key]["val_labels"]
    out, ties = [], g.setdefault("ties", {})  # (key, epoch) -> tied: incumbents repeat across seeds and methods
    for found in incumbents(arrivals, [f * g[unit] for f in FRACTIONS], unit):
        if found is None:
            out.append({"regret": None, "test": None, "tied": False})
            continue
        e = g["curves"][found[0]]["epochs"][found[1] - 1]
        if found not in ties:
            ties[found] = paired_bootstrap_p(labels, e["val_probs"], reference) > 0.05
        tied = ties[found]
        out.append({"regret": best_val - e["val_accuracy"], "test": e["test_accuracy"], "tied": tied})
    return out


def replay_key(method: Method, seed: int, table: str) -> str:
    return json.dumps([dataclasses.asdict(method) | {"name": None}, seed, table], sort_keys=True)


def run_replays(g: dict, rows: list[dict], methods: list[Method], seeds: int, processes: int) -> dict:
    """(method name, seed) -> arrivals, replaying only what CACHE lacks for this table."""
    space = sweep_space([r for r in rows if r["seed"] == 0 and "epochs" in r])
    curves = {k: r["epochs"] for k, r in g["curves"].items()}
    light = {k: [{"val_accuracy": e["val_accuracy"], "seconds": e["seconds"]} for e in v] for k, v in curves.items()}
    table = hashlib.sha256(json.dumps(light, sort_keys=True).encode()).hexdigest()[:16]
    cached = {}
    if CACHE.exists():
        with gzip.open(CACHE, "rt") as f:
            cached = dict(json.loads(line) for line in f)
    tasks = [(m, s) for m in methods for s in range(seeds) if replay_key(m, s, table) not in cached]
    print(f"[replay] {len(methods) * seeds - len(tasks)} replays cached, {len(tasks)} to run", flush=True)
    by_name, chunks = {m.name: m for m in methods}, [tasks[i:i + REPLAYS_PER_RAY] for i in range(0, len(tasks), REPLAYS_PER_RAY)]
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        for part in as_completed([pool.submit(replay_many, light, space, chunk) for chunk in chunks]):
            fresh = {replay_key(by_name[name], seed, table): arrivals for name, seed, arrivals in part.result()}
            with gzip.open(CACHE, "at") as f:  # kept as each chunk ends: a cut report loses one chunk at most
                f.write("".join(json.dumps([k, v]) + "\n" for k, v in fresh.items()))
            cached.update(fresh)
    return {(m.name, s): cached[replay_key(m, s, table)] for m in methods for s in range(seeds)}


def rung_correlations(g: dict) -> list[float]:
    """Per epoch e: Spearman correlation, over configs, of the validation accuracy at e with the config's best."""
    curves = list(g["curves"].values())
    final = [max(e["val_accuracy"] for e in r["epochs"]) for r in curves]
    depth = min(len(r["epochs"]) for r in curves)
    return [spearman([r["epochs"][e]["val_accuracy"] for r in curves], final) for e in range(depth)]


def seed_noise(rows: list[dict]) -> tuple[int, float, float]:
    """Configs recorded with both seeds: how many, the mean and the largest |difference| of their best val accuracy."""
    by = {}
    for r in rows:
        if "epochs" in r:
            by.setdefault(curve_key(r["config"]), {})[r["seed"]] = max(e["val_accuracy"] for e in r["epochs"])
    diffs = [abs(v[0] - v[1]) for v in by.values() if 0 in v and 1 in v]
    return len(diffs), (float(np.mean(diffs)) if diffs else float("nan")), (max(diffs) if diffs else float("nan"))


def summarise(g: dict, results: dict, methods: list[Method], seeds: int) -> dict:
    """method -> unit -> per fraction: (median, q1, q3) regret, median test, share tied."""
    out = {}
    for m in methods:
        for unit in ("seconds", "epochs"):
            scored = [score(g, results[(m.name, s)], unit) for s in range(seeds)]
            rows = []
            for i in range(len(FRACTIONS)):
                regrets = [x[i]["regret"] for x in scored if x[i]["regret"] is not None]
                tests = [x[i]["test"] for x in scored if x[i]["test"] is not None]
                q = np.percentile(regrets, [50, 25, 75]) if regrets else [float("nan")] * 3
                rows.append({"regret": tuple(float(v) for v in q), "test": statistics.median(tests) if tests else float("nan"),
                             "tied": sum(x[i]["tied"] for x in scored) / len(scored), "reached": len(regrets)})
            out.setdefault(m.name, {})[unit] = rows
    return out


def figure(summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, unit in zip(axes, ("seconds", "epochs")):
        for name, by_unit in summary.items():
            med = [r["regret"][0] * 100 for r in by_unit[unit]]
            lo, hi = [r["regret"][1] * 100 for r in by_unit[unit]], [r["regret"][2] * 100 for r in by_unit[unit]]
            line, = ax.plot(FRACTIONS, med, marker="o", label=name)
            ax.fill_between(FRACTIONS, lo, hi, alpha=0.12, color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_xticks(FRACTIONS, ["1/16", "1/8", "1/4", "1/3", "1/2", "1"])
        ax.set_xlabel(f"budget, share of the grid's cost in recorded {unit if unit == 'seconds' else 'trial-epochs'}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("regret: grid best - incumbent (val acc, points)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Median regret over search seeds (band: interquartile range)")
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="record the runs the table is missing, then stop")
    parser.add_argument("--budget-s", type=float, default=3 * 3600, help="--record: start no run after this many seconds")
    parser.add_argument("--workers", type=int, default=2, help="--record: runs at once (one torch thread each)")
    parser.add_argument("--seeds", type=int, default=50, help="search seeds per method")
    parser.add_argument("--processes", type=int, default=2, help="replays at once, each with its own local Ray")
    parser.add_argument("--methods", choices=["main", "all"], default="main", help="all: the further levers in MORE too")
    args = parser.parse_args()
    if args.record:
        return record(args.budget_s, args.workers, str(ROOT / ".cache" / "imdb_ray"))
    rows = load_table()
    if len([r for r in rows if "epochs" in r]) < len(runs()):
        sys.exit(f"error: {TABLE} holds {len(rows)} of {len(runs())} runs; finish it first: {sys.argv[0]} --record")
    start, g = time.perf_counter(), grid(rows)
    methods = METHODS + (MORE if args.methods == "all" else [])
    results = run_replays(g, rows, methods, args.seeds, args.processes)
    summary = summarise(g, results, methods, args.seeds)
    figure(summary)
    REPORT.write_text(report(g, rows, summary, args.seeds, time.perf_counter() - start))
    print(REPORT.read_text())


def report(g: dict, rows: list[dict], summary: dict, seeds: int, seconds: float) -> str:
    key, epoch, best = g["best"]
    pairs, mean_diff, max_diff = seed_noise(rows)
    n_val = next(iter(g["curves"].values()))["n_val"]
    lines = ["# Search efficiency: the engine's searchers and schedulers replayed on a recorded curve table", "",
             "Command: `.venv/bin/python benchmarks/search_efficiency.py` (the table by the same script with `--record`: "
             f"{TABLE.name}, {len(rows)} runs, {sum(e['seconds'] for r in rows for e in r.get('epochs', [])) / 3600:.1f} h of "
             "recorded training+validation on this 2-core machine, two runs at a time).", "",
             f"Table: {len(g['curves'])} configs (cnn, gru, attention_lstm x lr x width x dropout/frozen vectors), "
             f"{DATA['epochs']} epochs each, trained on the same {DATA['n_train']} real IMDB training reviews less validation; "
             f"validation: {n_val} movie-grouped reviews (binomial SE {100 * (best * (1 - best) / n_val) ** 0.5:.2f} pt at the best); "
             f"test: {DATA['n_test']} official test reviews. Grid cost: {g['seconds']:.0f} recorded seconds, {g['epochs']} trial-epochs. "
             f"Grid best: val {best:.4f} ({key}, epoch {epoch}).",
             f"Seed noise: {pairs} configs recorded with two training seeds differ in best val accuracy by "
             f"{100 * mean_diff:.2f} pt on average ({100 * max_diff:.2f} pt at most).", "",
             "Rank correlation (Spearman, over configs) of the validation accuracy at each epoch with the config's best: "
             + ", ".join(f"epoch {i + 1}: {r:.2f}" for i, r in enumerate(rung_correlations(g))) + ".", ""]
    for unit in ("seconds", "epochs"):
        lines += [f"## Regret at a budget of recorded {unit}, {seeds} search seeds per method", "",
                  "median regret in val accuracy points [IQR]; median test accuracy of the incumbent's config", "",
                  "| method | " + " | ".join(f"1/{round(1 / f)}" if f < 1 else "1" for f in FRACTIONS) + " |",
                  "|---|" + "---|" * len(FRACTIONS)]
        for name, by_unit in summary.items():
            cells = [f"{100 * r['regret'][0]:.2f} [{100 * r['regret'][1]:.2f}-{100 * r['regret'][2]:.2f}]; {r['test']:.4f}"
                     if r["reached"] else "-" for r in by_unit[unit]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    third = FRACTIONS.index(1 / 3)
    lines += ["## Tied with the grid's best at 1/3 of its cost in seconds", "",
              "Share of search seeds whose incumbent is statistically tied with the grid's best config (paired bootstrap on "
              "the recorded validation predictions, one-sided p > 0.05). Target: tied in at least 80 % of seeds, and "
              "a median regret at or below random + fifo's at every budget (in seconds).", "",
              "| method | tied at 1/3 | median regret <= random + fifo's at every budget | target met |", "|---|---|---|---|"]
    baseline = [r["regret"][0] for r in summary["random + fifo"]["seconds"]]
    for name, by_unit in summary.items():
        tied = by_unit["seconds"][third]["tied"]
        below = all(r["regret"][0] <= b + 1e-12 for r, b in zip(by_unit["seconds"], baseline))
        lines.append(f"| {name} | {tied:.0%} | {'yes' if below else 'no'} | {'yes' if tied >= 0.8 and below else 'no'} |")
    lines += ["", f"![regret against budget]({FIGURE.name})", "", f"Replays took {seconds:.0f} s in all.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
