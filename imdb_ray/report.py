"""`python -m imdb_ray report`: leaderboards, confidence intervals and plots from the MLflow store.

Per sweep (the newest parent run of each experiment) it writes into the output folder:
  <sweep>_leaderboard.md / .csv   one row per trial, best validation first; test accuracy with a 95%
                                  bootstrap interval where the trial's test predictions were logged
  <sweep>_pareto.png              accuracy vs device-seconds and vs trainable parameters, Pareto fronts
  <sweep>_curves.png              validation accuracy per epoch: the best trial of each model (PEFT method, strategy) compared, else the top trials
  <sweep>_asha.png                how many epochs each trial ran (early stops and failures visible)
Selection is always on validation; test numbers are reported, never used to choose.
"""
from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


from imdb_ray.compare import (BOOTSTRAP_SAMPLES, Confirmed, Paired, aligned, bootstrap_ci, build_ensembles,
                              confirmed_configs, paired_comparison)
from imdb_ray.errors import UserError
from imdb_ray.metrics import METRICS
from imdb_ray.plots import write_plots


@dataclass
class TrialRow:
    run_id: str
    name: str
    status: str
    model: str
    strategy: str
    peft: str
    params: dict = field(default_factory=dict)  # the parameters that differ between this sweep's trials
    all_params: dict = field(default_factory=dict)
    sweep: str = ""
    val_accuracy: float | None = None  # the best epoch's (the weights the trial keeps)
    selection: float | None = None  # the sweep's selection metric (e.g. val_loss) at the trial's best epoch
    epochs: int = 0
    curve: list[float] = field(default_factory=list)
    test_accuracy: float | None = None
    test_ci: tuple[float, float] | None = None
    test_f1: float | None = None
    trainable_params: float | None = None
    total_params: float | None = None
    wall_seconds: float | None = None
    device_seconds: float | None = None
    device: str = ""
    error: str = ""
    predictions: dict = field(default_factory=dict, repr=False)  # "val"/"test" -> row, label, prob_positive
    vs_best: Paired | None = None  # test accuracy minus the winner's, paired on the same reviews
    trial_id: str = ""
    confirms: str = ""  # a confirmation rerun: the trial id of the config it trains again with a new seed
    confirmed_seeds: int = 0  # comparison.md: this row stands for the mean of that many confirmation reruns
    machine: str = ""  # the node the trial ran on, and its libraries (tags imdb_ray.machine, imdb_ray.versions)
    versions: str = ""


def collect(uri: str, experiment: str) -> tuple[dict, list[TrialRow]]:
    """The newest sweep of `experiment`: its parent run's params and one row per child run."""
    from imdb_ray.tracking import SweepRuns
    from imdb_ray.tracking.reads import known_sweeps, logged_predictions, metric_curve

    runs = SweepRuns(uri, experiment)
    if runs.experiment_id() is None:
        raise UserError(f"no sweep named '{experiment}' in {uri}; {known_sweeps(experiment, uri)}")
    parent = runs.parent()
    if parent is None:
        raise UserError(f"experiment '{experiment}' in {uri} has no imdb_ray sweep run")
    children = runs.trials(parent.info.run_id)
    # orphans of a killed driver were rerun as other trials; trials cut by the time budget stay (KILLED)
    children = [c for c in children if "imdb_ray.orphaned" not in c.data.tags]
    varying = _varying_params([c.data.params for c in children])
    metric, descending = parent.data.params.get("metric", "val_accuracy"), parent.data.params.get("mode", "max") == "max"
    rows = []
    for c in children:
        m, tags = c.data.metrics, c.data.tags
        curve = metric_curve(runs, c.info.run_id, "val_accuracy")
        row = TrialRow(run_id=c.info.run_id, name=c.info.run_name or c.info.run_id[:8], status=c.info.status,
                       model=tags.get("model", c.data.params.get("model", "?")), strategy=tags.get("strategy", "ce"),
                       peft=c.data.params.get("peft", "-"), params={k: c.data.params.get(k) for k in varying},
                       all_params=dict(c.data.params), sweep=experiment,
                       val_accuracy=max(curve) if curve else None, epochs=len(curve), curve=curve,
                       test_accuracy=m.get("test_accuracy"), test_f1=m.get("test_f1"),
                       trainable_params=m.get("trainable_params"), total_params=m.get("total_params"),
                       wall_seconds=m.get("wall_seconds"), device_seconds=m.get("device_seconds"),
                       device=tags.get("device_kind", ""), error=tags.get("error") or tags.get("imdb_ray.stopped", ""),
                       trial_id=tags.get("trial_id", ""), confirms=tags.get("imdb_ray.confirms", ""),
                       machine=tags.get("imdb_ray.machine", ""), versions=tags.get("imdb_ray.versions", ""))
        # runs logged before best_<metric> existed: the best of the accuracy curve (their selection metric)
        row.selection = m.get(METRICS[metric].best_key, row.val_accuracy if metric == "val_accuracy" else None)
        if "test_accuracy" in m:
            row.predictions = {split: table for split in ("test", "val")
                               if (table := logged_predictions(runs, c.info.run_id, split)) is not None}
            if "test" in row.predictions:
                acc, low, high = bootstrap_ci(row.predictions["test"].label.to_numpy(),
                                              row.predictions["test"].prob_positive.to_numpy())
                row.test_accuracy, row.test_ci = acc, (low, high)
        rows.append(row)
    rows.sort(key=lambda r: (r.selection is None, -(r.selection or 0) if descending else (r.selection or 0)))
    return {"run_id": parent.info.run_id, "sweep_file": parent.data.tags.get("sweep_file", ""),
            "command": parent.data.tags.get("imdb_ray.command", ""), "versions": parent.data.tags.get("imdb_ray.versions", ""),
            "machine": parent.data.tags.get("imdb_ray.machine", ""), "status": parent.info.status, **parent.data.params}, rows


def _varying_params(params: list[dict]) -> list[str]:
    """The keys whose value differs between the runs that have them: a neural model's fixed settings
    (amp, embed_dim, ...) are absent from a baseline's run, which is no reason to list them on every row."""
    keys = sorted({k for p in params for k in p})
    skip = {"cache_dir", "data", "checkpoint", "seed"}
    return [k for k in keys if k not in skip and len({p[k] for p in params if k in p}) > 1]


def compare_to_winner(rows: list[TrialRow]) -> TrialRow | None:
    """Each tested trial's paired difference to the winner (the best by validation with test
    predictions), on the reviews both scored; returns the winner."""
    tested = [r for r in rows if "test" in r.predictions]
    if not tested:
        return None
    winner = tested[0]
    for r in tested[1:]:
        pair = aligned(r.predictions["test"], winner.predictions["test"])
        r.vs_best = paired_comparison(*pair) if pair is not None else None
    return winner


def ensemble_rows(rows: list[TrialRow], top: int) -> list[TrialRow]:
    """Ensembles of the tested trials, chosen on their logged validation predictions (no retraining)."""
    candidates = [(r.name, r.predictions["val"], r.predictions["test"]) for r in rows if {"val", "test"} <= set(r.predictions)]
    out = []
    for ens in build_ensembles(candidates, top):
        acc, low, high = bootstrap_ci(ens.test.label.to_numpy(), ens.test.prob_positive.to_numpy())
        counts = {n: ens.members.count(n) for n in dict.fromkeys(ens.members)}
        members = " + ".join(n if c == 1 else f"{n} x{c}" for n, c in counts.items())
        out.append(TrialRow(run_id="", name=ens.name, status="ENSEMBLE", model="ensemble", strategy="-", peft="-",
                            params={"members": members}, val_accuracy=ens.val_accuracy, test_accuracy=acc,
                            test_ci=(low, high), predictions={"test": ens.test}))
    return out


# ------------------------------------------------------------------------------------------- writing
COLUMNS = ["rank", "trial", "status", "model", "strategy", "peft", "params", "val_accuracy", "test_accuracy",
           "test_ci95", "vs_best_ci95", "mcnemar_p", "test_f1", "trainable_params", "total_params", "epochs", "wall_s",
           "device_s"]


def _fmt(value, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


def _short(value: str) -> str:
    """3 significant digits for floats (a sampled lr of 0.0012732945 reads as 0.00127)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(value) if number.is_integer() else f"{number:.3g}"


def table_rows(rows: list[TrialRow]) -> list[dict]:
    out = []
    for rank, r in enumerate(rows, 1):
        out.append({
            "rank": rank if r.status != "ENSEMBLE" else "-", "trial": r.name, "status": r.status.lower() + (f": {r.error}" if r.error else ""),
            "model": r.model, "strategy": r.strategy, "peft": r.peft,
            "params": " ".join(f"{k}={_short(v)}" for k, v in r.params.items() if v not in (None, "None") and k not in ("model", "peft")),
            "val_accuracy": _fmt(r.val_accuracy), "test_accuracy": _fmt(r.test_accuracy),
            "test_ci95": f"[{r.test_ci[0]:.4f}, {r.test_ci[1]:.4f}]" if r.test_ci else "",
            "vs_best_ci95": f"{r.vs_best.diff:+.4f} [{r.vs_best.low:+.4f}, {r.vs_best.high:+.4f}]" if r.vs_best else "",
            "mcnemar_p": f"{r.vs_best.p_value:.3g}" if r.vs_best else "",
            "test_f1": _fmt(r.test_f1), "trainable_params": _fmt(r.trainable_params, ",.0f"),
            "total_params": _fmt(r.total_params, ",.0f"), "epochs": r.epochs if r.status != "ENSEMBLE" else "",
            "wall_s": _fmt(r.wall_seconds, ".0f"),
            "device_s": (_fmt(r.device_seconds, ".0f") + (f" {r.device}" if r.device else "")) if r.device_seconds else "",
        })
    return out


def mixed_environments(parent: dict, rows: list[TrialRow]) -> str:
    """A sentence where the trials ran on several kinds of machine, or with libraries other than one set (the
    driver's): the same seeds can train to other numbers there, so rows are comparable within a group. "" if not."""
    machines = Counter(r.machine for r in rows if r.machine)
    versions = Counter(r.versions for r in rows if r.versions)
    notes = ""
    if len(machines) > 1:
        notes += f" The trials ran on {len(machines)} kinds of machine: " + "; ".join(
            f"{n} trial(s) on {machine}" for machine, n in machines.most_common()) + "."
    if len(versions) > 1 or (versions and parent.get("versions") and set(versions) != {parent["versions"]}):
        which = f"{len(versions)} sets of libraries" if len(versions) > 1 else "other libraries than the driver"
        notes += f" The trials ran with {which}: " + "; ".join(f"{n} trial(s) with {v}" for v, n in versions.most_common()) + "."
    return notes


def write_leaderboard(name: str, parent: dict, rows: list[TrialRow], out: Path, ensembles: list[TrialRow] = (),
                      confirmed: list[Confirmed] = ()) -> list[Path]:
    table = table_rows(rows + list(ensembles))
    csv_path, md_path = out / f"{name}_leaderboard.csv", out / f"{name}_leaderboard.md"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(table)
    tested = sum(r.test_accuracy is not None for r in rows)
    ran = _sweep_command(parent.get("sweep_file", ""), parent.get("command", "")).removesuffix(", then ")
    lines = [f"# Sweep `{name}`: leaderboard", "",
             (f"Sweep: {ran}; this file: " if ran else "Command: ") +
             f"`python -m imdb_ray report --sweep {name}` (MLflow parent run {parent['run_id']}). "
             f"{len(rows)} trials, ranked by their best {parent.get('metric', 'val_accuracy')} (the selection metric). "
             f"{tested} trial(s) evaluated once on the test split; the interval is a 95% percentile bootstrap over "
             f"test reviews ({BOOTSTRAP_SAMPLES} resamples, seed 0). vs_best: test accuracy minus the winner's on the "
             "same reviews, with a 95% paired bootstrap interval, and McNemar's exact p-value. Ensemble rows average "
             "the members' probabilities; members are chosen on validation only (so their val_accuracy is optimistic). "
             "device_s = wall seconds x devices held." +
             (f" Ran with {parent['versions']}, driven from {parent['machine']} (each trial's machine and libraries: its MLflow "
              "run's tags imdb_ray.machine and imdb_ray.versions)." if parent.get("versions") else "") +
             mixed_environments(parent, rows), ""]
    lines += [verdict(rows, parent.get("status", "FINISHED")), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]).replace("|", "/") for c in COLUMNS) + " |" for row in table]
    if confirmed:
        lines += ["", "## Confirmed configurations", "", "The top configs trained again with new seeds (the "
                  "search's own run is left out of the means: it was picked for its high validation score). A "
                  "seed-independent model (seeds: \"own run\") would repeat its run exactly, so its run is its "
                  "confirmation. Ranked by mean validation. **Quote the first row's test mean ± sd.**", "",
                  "| rank | config (search trial) | model | params | seeds | val mean ± sd | test mean ± sd | each seed: test [95% CI] |",
                  "|---|---|---|---|---|---|---|---|"]
        for rank, c in enumerate(confirmed, 1):
            test = f"{c.test_mean:.4f} ± {c.test_sd:.4f}" if c.test_mean is not None else "(not tested)"
            seeds = "; ".join(f"{r.all_params.get('seed', '?')}: {r.test_accuracy:.4f} [{r.test_ci[0]:.4f}, {r.test_ci[1]:.4f}]"
                              for r in sorted(c.reruns, key=lambda r: int(r.all_params.get("seed", 0))) if r.test_ci)
            params = " ".join(f"{k}={_short(v)}" for k, v in c.original.params.items() if v not in (None, "None") and k != "model")
            lines.append(f"| {rank} | {c.original.name} | {c.original.model} | {params} | "
                         f"{'own run' if c.own_run else len(c.reruns)} | "
                         f"{c.selection_mean:.4f} ± {c.selection_sd:.4f} | {test} | {seeds} |")
    md_path.write_text("\n".join(lines) + "\n")
    return [md_path, csv_path]


def verdict(rows: list[TrialRow], status: str = "FINISHED") -> str:
    """One sentence: is the winner distinguishable from the runners-up on test? (Or why nothing was tested.)"""
    compared = [r for r in rows if r.vs_best is not None]
    tested = sum("test" in r.predictions for r in rows)
    if status != "FINISHED" and not tested:
        return (f"**This sweep has not finished** (its MLflow parent run is {status}): the table holds what its trials "
                "reached, and nothing was evaluated on test yet; the sweep command plus --resume continues it.")
    if not compared:
        return ("No trial has test predictions: nothing to compare." if not tested else
                "Only one trial has test predictions: nothing to compare the winner with.")
    tied = [r for r in compared if r.vs_best.low <= 0 <= r.vs_best.high or r.vs_best.p_value >= 0.05]
    if not tied:
        return "The winner is better on test than every other tested trial (paired 95% intervals exclude 0, McNemar p < 0.05)."
    names = ", ".join(f"{r.name} ({r.model}, {r.vs_best.diff:+.4f}, p={r.vs_best.p_value:.2g})" for r in tied)
    return f"**The winner is not distinguishable on test from:** {names}. Confirm with seeds before calling it better."


def report(uri: str, sweeps: list[str] | None, out: str | Path) -> list[Path]:
    """Write every file for each sweep (all sweeps in the store when none are named) into `out`. Each sweep's
    files carry its name, so a report never replaces another sweep's; the comparison with the original
    study draws only on sweeps of the bundled IMDB data, and never replaces one drawn from other sweeps."""
    from imdb_ray.models import seed_independent
    from imdb_ray.study import as_confirmed, comparison_path, on_bundled_imdb, write_comparison
    from imdb_ray.tracking import check_reachable
    from imdb_ray.tracking.reads import sweeps_in

    check_reachable(uri, must_exist=True)
    names = sweeps or sweeps_in(uri)
    if not names:
        raise UserError(f"no imdb_ray sweeps in {uri}; run one first (python -m imdb_ray sweep ...)")
    collected = {name: collect(uri, name) for name in names}  # every named sweep exists before a file is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, everything = [], []
    for name, (parent, rows) in collected.items():
        search, reruns = [r for r in rows if not r.confirms], [r for r in rows if r.confirms]
        compare_to_winner(search)
        ensembles = ensemble_rows(search, int(float(parent.get("ensemble_top") or 3)))
        confirmed = confirmed_configs(search, reruns, parent.get("mode", "max") == "max", seed_independent)
        files = write_leaderboard(name, parent, search, out, ensembles, confirmed) + write_plots(name, search, out)
        key = f"| `{name}_leaderboard.md`"
        extra = ", ".join(f"`{p.name}`" for p in files[1:])
        counted = f"{len(search)} search trials" + (f" + {len(reruns)} confirmation reruns" if reruns else "")
        index_row(out, key, f"{key} (and {extra}) | sweep `{name}`: {counted}, leaderboard with test 95% "
                  f"bootstrap intervals, Pareto, learning-curve and ASHA plots | "
                  f"{_sweep_command(parent.get('sweep_file', ''), parent.get('command', ''))}"
                  f"`python -m imdb_ray report --sweep {name} --out {out}` |")
        written += files
        if on_bundled_imdb(rows):  # the original study's numbers are IMDB's: a user's own data is not judged by them
            everything += [as_confirmed(r, confirmed) for r in search]
    compared = sorted({r.sweep for r in everything})
    if compared:
        path = write_comparison(everything, comparison_path(out, compared), compared, out)
        written.append(path)
        index_row(out, f"| `{path.name}` |", f"| `{path.name}` | the original study's reported numbers beside our best "
                  f"matching trial (sweeps {', '.join(compared)}) | "
                  f"`python -m imdb_ray report{''.join(f' --sweep {n}' for n in compared)} --out {out}` |")
    return written


def _sweep_command(sweep_file: str, command: str = "") -> str:
    """`python -m imdb_ray sweep sweeps/x.py`, then: the command that produced the runs, when known."""
    if command:
        return f"`{command}`, then "
    if not sweep_file:
        return ""
    path = Path(sweep_file)
    shown = f"sweeps/{path.name}" if path.parent.name == "sweeps" else str(path)
    return f"`python -m imdb_ray sweep {shown}`, then "


def index_row(out: Path, key: str, line: str) -> None:
    """Add (or replace) the line starting with `key` in <out>/README.md, the index of results files."""
    index = out / "README.md"
    text = index.read_text() if index.exists() else (
        "# results/\n\nEvery file here was written by a command in this repository; rerun the command to reproduce it.\n\n"
        "| file | what | command |\n|---|---|---|\n")
    lines = [ln for ln in text.rstrip("\n").splitlines() if not ln.startswith(key)]
    index.write_text("\n".join(lines + [line]) + "\n")
