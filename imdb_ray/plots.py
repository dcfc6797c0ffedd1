"""The plots `report` writes per sweep: accuracy vs cost with Pareto fronts, learning curves (the best
trial of each model, PEFT method or strategy the sweep compares), and epochs per trial (where the
scheduler stopped whom)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from imdb_ray.report import TrialRow


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of points no other point beats on both (lower cost, higher value), by cost."""
    order = np.argsort(cost, kind="stable")
    front, best = [], -np.inf
    for i in order:
        if value[i] > best:
            front.append(i)
            best = value[i]
    return np.array(front, dtype=int)


def write_plots(name: str, rows: list, out: Path, top: int = 5) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    done = [r for r in rows if r.val_accuracy is not None]
    # accuracy vs cost, with the Pareto front (the trials nothing else beats on both)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    group = compared(done)
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
    # learning curves: the best trial of each thing the sweep compares, else its top trials
    fig, ax = plt.subplots(figsize=(10, 4.2))
    shown, title = curve_trials(done, group, top)
    for r in shown:
        value = f"{group}={getattr(r, group)}"
        label = trial_label(r) if group == "model" or value in r.name else f"{value}: {trial_label(r)}"
        ax.plot(range(1, len(r.curve) + 1), r.curve, marker="o", label=label)
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"{name}: {title}")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the curves, never over them
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / f"{name}_curves.png")
    fig.savefig(paths[-1], dpi=110, bbox_inches="tight")  # the legend outside the axes included
    plt.close(fig)
    # which trial ran how many epochs (ASHA's early stops, failures)
    labels = [trial_label(r) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.15 * sum(label.count("\n") + 2 for label in labels) + 1.5))
    colours = {"FINISHED": "tab:green", "FAILED": "tab:red"}
    for i, r in enumerate(rows):
        stopped = r.status == "FINISHED" and not ran_to_its_end(r)
        ax.barh(i, r.epochs, color="tab:orange" if stopped else colours.get(r.status, "tab:gray"))
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("epochs run (green: ran to its end, all epochs or its own patience stop;\n"
                  "orange: stopped by the scheduler; red: failed; gray: cut when the sweep ended)", fontsize=8)
    ax.set_title(f"{name}: epochs per trial, best validation first")
    fig.tight_layout()
    paths.append(out / f"{name}_asha.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


GROUP_NAMES = {"model": "model", "peft": "PEFT method", "strategy": "strategy"}


def compared(rows: list) -> str:
    """What the sweep varies most visibly, for colours and curves: the model, else the PEFT method, else the strategy."""
    return next((g for g in ("model", "peft", "strategy") if len({getattr(r, g) for r in rows}) > 1), "model")


def curve_trials(rows: list, group: str, top: int, most: int = 10) -> tuple[list, str]:
    """The trials whose learning curves are drawn, and the plot's title. `rows` best first. A sweep that compares
    several values of `group` (models, say) shows the best trial of each, up to `most` (matplotlib's ten colours):
    its top trials alone are often one model's. A sweep of one value shows its `top` trials."""
    values = list(dict.fromkeys(getattr(r, group) for r in rows))  # in order of each value's best trial
    if len(values) < 2:
        return rows[:top], f"top {min(top, len(rows))} trials"
    best = [next(r for r in rows if getattr(r, group) == v) for v in values[:most]]
    more = f" ({len(values) - most} more not shown)" if len(values) > most else ""
    return best, f"best trial of each {GROUP_NAMES[group]}{more}"


def trial_label(r: TrialRow, width: int = 60) -> str:
    """A trial's name for a legend or an axis: its model first, wrapped (names carry the sampled values)."""
    name = r.name if r.name.split(" ")[0] == r.model else f"{r.name} ({r.model})"
    return textwrap.fill(name, width)


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
