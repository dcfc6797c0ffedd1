"""`python -m imdb_ray report`: leaderboards, confidence intervals and plots from the MLflow store.

Per sweep (the newest parent run of each experiment) it writes into the output folder:
  <sweep>_leaderboard.md / .csv   one row per trial, best validation first; test accuracy with a 95%
                                  bootstrap interval where the trial's test predictions were logged
  <sweep>_pareto.png              accuracy vs device-seconds and vs trainable parameters, Pareto fronts
  <sweep>_curves.png              validation accuracy per epoch of the top trials
  <sweep>_asha.png                how many epochs each trial ran (early stops and failures visible)
Selection is always on validation; test numbers are reported, never used to choose.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imdb_ray.errors import UserError

BOOTSTRAP_SAMPLES = 2000


def bootstrap_ci(labels: np.ndarray, probs: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Accuracy and its percentile bootstrap interval over reviews (resampled with replacement)."""
    correct = (probs >= 0.5).astype(int) == labels
    n = len(correct)
    # Resampling n reviews with replacement draws Binomial(n, accuracy) correct ones: the same
    # distribution as indexing the reviews, without a samples x n index (400 MB at 25k reviews).
    means = np.random.default_rng(seed).binomial(n, correct.mean(), size=samples) / n
    tail = (1 - level) / 2 * 100
    return float(correct.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats on both (lower cost, higher value), by cost."""
    order = np.argsort(cost, kind="stable")
    front, best = [], -np.inf
    for i in order:
        if value[i] > best:
            front.append(i)
            best = value[i]
    return np.array(front, dtype=int)


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


def collect(uri: str, experiment: str) -> tuple[dict, list[TrialRow]]:
    """The newest sweep of `experiment`: its parent run's params and one row per child run."""
    from imdb_ray.tracking import SweepRuns

    runs = SweepRuns(uri, experiment)
    if runs.experiment_id() is None:
        raise UserError(f"no sweep named '{experiment}' in {uri}")
    parent = runs.parent()
    if parent is None:
        raise UserError(f"experiment '{experiment}' in {uri} has no imdb_ray sweep run")
    client, children = runs.client, runs.trials(parent.info.run_id)
    # orphans of a killed driver were rerun as other trials; trials cut by the time budget stay (KILLED)
    children = [c for c in children if "imdb_ray.orphaned" not in c.data.tags]
    varying = _varying_params([c.data.params for c in children])
    metric, descending = parent.data.params.get("metric", "val_accuracy"), parent.data.params.get("mode", "max") == "max"
    rows = []
    for c in children:
        m, tags = c.data.metrics, c.data.tags
        curve = [h.value for h in sorted(client.get_metric_history(c.info.run_id, "val_accuracy"), key=lambda h: h.step)]
        row = TrialRow(run_id=c.info.run_id, name=c.info.run_name or c.info.run_id[:8], status=c.info.status,
                       model=tags.get("model", c.data.params.get("model", "?")), strategy=tags.get("strategy", "ce"),
                       peft=c.data.params.get("peft", "-"), params={k: c.data.params.get(k) for k in varying},
                       all_params=dict(c.data.params), sweep=experiment,
                       val_accuracy=max(curve) if curve else None, epochs=len(curve), curve=curve,
                       test_accuracy=m.get("test_accuracy"), test_f1=m.get("test_f1"),
                       trainable_params=m.get("trainable_params"), total_params=m.get("total_params"),
                       wall_seconds=m.get("wall_seconds"), device_seconds=m.get("device_seconds"),
                       device=tags.get("device_kind", ""), error=tags.get("error") or tags.get("imdb_ray.stopped", ""))
        # runs logged before best_<metric> existed: the best of the accuracy curve (their selection metric)
        row.selection = m.get(f"best_{metric}", row.val_accuracy if metric == "val_accuracy" else None)
        if "test_accuracy" in m:
            preds = _predictions(client, c.info.run_id)
            if preds is not None:
                acc, low, high = bootstrap_ci(*preds)
                row.test_accuracy, row.test_ci = acc, (low, high)
        rows.append(row)
    rows.sort(key=lambda r: (r.selection is None, -(r.selection or 0) if descending else (r.selection or 0)))
    return {"run_id": parent.info.run_id, "sweep_file": parent.data.tags.get("sweep_file", ""),
            "command": parent.data.tags.get("imdb_ray.command", ""), **parent.data.params}, rows


def _varying_params(params: list[dict]) -> list[str]:
    keys = sorted({k for p in params for k in p})
    skip = {"cache_dir", "data", "checkpoint", "seed"}
    return [k for k in keys if k not in skip and len({p.get(k) for p in params}) > 1]


def _predictions(client, run_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "test_predictions.csv", tmp)
        except Exception:  # older runs: no predictions logged, so no interval
            return None
        table = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    return np.array([int(r["label"]) for r in table]), np.array([float(r["prob_positive"]) for r in table])


# ------------------------------------------------------------------------------------------- writing
COLUMNS = ["rank", "trial", "status", "model", "strategy", "peft", "params", "val_accuracy", "test_accuracy",
           "test_ci95", "test_f1", "trainable_params", "total_params", "epochs", "wall_s", "device_s"]


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
            "rank": rank, "trial": r.name, "status": r.status.lower() + (f": {r.error}" if r.error else ""),
            "model": r.model, "strategy": r.strategy, "peft": r.peft,
            "params": " ".join(f"{k}={_short(v)}" for k, v in r.params.items() if v not in (None, "None") and k not in ("model", "peft")),
            "val_accuracy": _fmt(r.val_accuracy), "test_accuracy": _fmt(r.test_accuracy),
            "test_ci95": f"[{r.test_ci[0]:.4f}, {r.test_ci[1]:.4f}]" if r.test_ci else "",
            "test_f1": _fmt(r.test_f1), "trainable_params": _fmt(r.trainable_params, ",.0f"),
            "total_params": _fmt(r.total_params, ",.0f"), "epochs": r.epochs,
            "wall_s": _fmt(r.wall_seconds, ".0f"),
            "device_s": (_fmt(r.device_seconds, ".0f") + (f" {r.device}" if r.device else "")) if r.device_seconds else "",
        })
    return out


def write_leaderboard(name: str, parent: dict, rows: list[TrialRow], out: Path, uri: str) -> list[Path]:
    table = table_rows(rows)
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
             f"test reviews ({BOOTSTRAP_SAMPLES} resamples, seed 0). device_s = wall seconds x devices held.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]).replace("|", "/") for c in COLUMNS) + " |" for row in table]
    md_path.write_text("\n".join(lines) + "\n")
    return [md_path, csv_path]


def write_plots(name: str, rows: list[TrialRow], out: Path, top: int = 5) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    done = [r for r in rows if r.val_accuracy is not None]
    # accuracy vs cost, with the Pareto front (the trials nothing else beats on both)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    # colour by what the sweep varies most visibly: the model, else the PEFT method, else the strategy
    group = next((g for g in ("model", "peft", "strategy") if len({getattr(r, g) for r in done}) > 1), "model")
    for ax, attr, label in ((axes[0], "device_seconds", "device-seconds"), (axes[1], "trainable_params", "trainable parameters")):
        pts = [(getattr(r, attr), r.val_accuracy, getattr(r, group)) for r in done if getattr(r, attr)]
        if pts:
            cost, acc = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
            for model in sorted({p[2] for p in pts}):
                sel = [i for i, p in enumerate(pts) if p[2] == model]
                ax.scatter(cost[sel], acc[sel], label=model, alpha=0.8)
            front = pareto_front(cost, acc)
            ax.plot(cost[front], acc[front], "k--", lw=1, label="Pareto front")
            if cost.max() > 10 * cost.min():
                ax.set_xscale("log")
                label += " (log)"
            else:
                ax.ticklabel_format(axis="x", style="plain", useOffset=False)
        ax.set_xlabel(label)
        ax.set_ylabel("best validation accuracy")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{name}: accuracy vs cost")
    fig.tight_layout()
    paths.append(out / f"{name}_pareto.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # learning curves of the top trials
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in done[:top]:
        ax.plot(range(1, len(r.curve) + 1), r.curve, marker="o", label=f"{r.name} ({r.model})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{name}: top {min(top, len(done))} trials")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / f"{name}_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # which trial ran how many epochs (ASHA's early stops, failures)
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * len(rows) + 1.5))
    colours = {"FINISHED": "tab:green", "FAILED": "tab:red"}
    for i, r in enumerate(rows):
        stopped = r.status == "FINISHED" and not ran_to_its_end(r)
        ax.barh(i, r.epochs, color="tab:orange" if stopped else colours.get(r.status, "tab:gray"))
    ax.set_yticks(range(len(rows)), [f"{r.name} ({r.model})" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("epochs run (green: ran to its end, all epochs or its own patience stop;\n"
                  "orange: stopped by the scheduler; red: failed; gray: cut when the sweep ended)", fontsize=8)
    ax.set_title(f"{name}: epochs per trial, best validation first")
    fig.tight_layout()
    paths.append(out / f"{name}_asha.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def ran_to_its_end(r: TrialRow) -> bool:
    """Did the trial end by itself (all its epochs, a one-fit baseline, or the loop's own `patience`
    stop: no better validation accuracy in its last `patience` epochs), not by the scheduler?"""
    from imdb_ray.models import FAMILIES, list_models

    if r.model in {m.name for m in list_models() if not FAMILIES[m.family].neural}:  # one fit, reported as one epoch
        return True
    epochs, patience = int(r.all_params.get("epochs", 0) or 0), int(r.all_params.get("patience", 0) or 0)
    if not r.curve or len(r.curve) >= epochs:
        return bool(r.curve)
    best = r.curve.index(max(r.curve))
    return patience > 0 and len(r.curve) - 1 - best >= patience


def sweeps_in(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    names = []
    for exp in client.search_experiments():
        if client.search_runs([exp.experiment_id], "tags.`imdb_ray.kind` = 'sweep'", max_results=1):
            names.append(exp.name)
    return sorted(names)


def report(uri: str, sweeps: list[str] | None, out: str | Path) -> list[Path]:
    """Write every file for each sweep (all sweeps in the store when none are named)."""
    from imdb_ray.tracking import check_reachable

    check_reachable(uri)
    names = sweeps or sweeps_in(uri)
    if not names:
        raise UserError(f"no imdb_ray sweeps in {uri}; run one first (python -m imdb_ray sweep ...)")
    collected = {name: collect(uri, name) for name in names}  # every named sweep exists before a file is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, everything = [], []
    for name, (parent, rows) in collected.items():
        files = write_leaderboard(name, parent, rows, out, uri) + write_plots(name, rows, out)
        key = f"| `{name}_leaderboard.md`"
        extra = ", ".join(f"`{p.name}`" for p in files[1:])
        index_row(out, key, f"{key} (and {extra}) | sweep `{name}`: {len(rows)} trials, leaderboard with test 95% "
                  f"bootstrap intervals, Pareto, learning-curve and ASHA plots | "
                  f"{_sweep_command(parent.get('sweep_file', ''), parent.get('command', ''))}"
                  f"`python -m imdb_ray report --sweep {name}` |")
        written += files
        everything += rows
    written.append(write_comparison(everything, out, names))
    index_row(out, "| `comparison.md` |", "| `comparison.md` | the original study's reported numbers beside our best "
              "matching trial (from the sweeps reported) | "
              f"`python -m imdb_ray report{''.join(f' --sweep {n}' for n in names)}` |")
    return written


def _matches(row: TrialRow, want: dict) -> bool:
    defaults = {"peft": "none", "init": "pretrained", "engine": "torch", "recipe": "None"}
    for key, value in want.items():
        have = row.model if key == "model" else row.strategy if key == "strategy" else \
            row.all_params.get(key, defaults.get(key))
        if str(have) != str(value):
            return False
    return row.val_accuracy is not None


def write_comparison(rows: list[TrialRow], out: Path, sweeps: list[str] | None = None) -> Path:
    """The original study's reported numbers beside our best matching trial (selected on validation)."""
    from imdb_ray.reference import ORIGINAL, SOURCE

    pct = lambda v: "" if v is None else f"{v:.2%}"  # noqa: E731
    lines = ["# Our runs beside the original study", "",
             f"Command: `python -m imdb_ray report{''.join(f' --sweep {n}' for n in sweeps or [])}` (our trials from "
             f"sweeps: {', '.join(sweeps or sorted({r.sweep for r in rows}))}). Theirs: {SOURCE}. Their accuracies are",
             "train and **validation** accuracy on a random split of the labelled training data (their README gives",
             "no seed), and their Kaggle column is the competition's ROC AUC, not accuracy. Ours: the trial with the",
             "best validation accuracy among our runs that match the row (same model, method, recipe, strategy),",
             "with its accuracy on the official 25k test split (or the subset the sweep used) and a 95% bootstrap",
             "interval. Empty: we have not run that configuration in any sweep in this store (most need a GPU).", "",
             "| their model | their train acc | their val acc | their Kaggle AUC | our val acc | our test acc [95% CI] | "
             "n test | our sweep / trial |", "|---|---|---|---|---|---|---|---|"]
    for name, want, train_acc, val_acc, kaggle in ORIGINAL:
        matching = sorted((r for r in rows if _matches(r, want)), key=lambda r: -r.val_accuracy)
        ours = ["", "", "", ""]
        if matching:
            best = matching[0]
            test = f"{best.test_accuracy:.2%}" if best.test_accuracy is not None else "(not tested)"
            if best.test_ci:
                test += f" [{best.test_ci[0]:.2%}, {best.test_ci[1]:.2%}]"
            n_test = best.all_params.get("n_test")
            n_test = "25000 (all)" if n_test in (None, "None") else n_test  # no n_test: the whole official split
            ours = [pct(best.val_accuracy), test, n_test, f"{best.sweep} / {best.name}"]
        note = "their run: not supported by the model" if val_acc is None else ""
        lines.append(f"| {name} | {pct(train_acc)} | {pct(val_acc) or note} | {kaggle or ''} | " + " | ".join(map(str, ours)) + " |")
    path = out / "comparison.md"
    path.write_text("\n".join(lines) + "\n")
    return path


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
