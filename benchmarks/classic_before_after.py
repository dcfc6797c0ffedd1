"""The classic sweep's recorded rows before and after a change of its search settings, side by side: per model,
the best validation score the search found, its test accuracy, the trials and trial-epochs the 60-minute budget
bought; and the confirmed configs. "Before" is the record committed at a git revision, "after" the one in the
working tree (both written by benchmarks/record_sweep.py). The section is appended to results/classic_comparison.md
(which record_sweep.py rewrites from the report; run this after it).

    .venv/bin/python benchmarks/classic_before_after.py --before 1680b96 --label-before "grace 2, reduction 3" \\
        --label-after "grace 1, reduction 2"
"""
from __future__ import annotations

import argparse
import csv
import io
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "\n## Search settings before and after\n"


def at_revision(path: str, revision: str | None) -> str:
    """A results file as committed at `revision`, or as it is in the working tree (None)."""
    if revision is None:
        return (ROOT / path).read_text()
    return subprocess.run(["git", "show", f"{revision}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def record(revision: str | None) -> dict:
    """One record: its leaderboard rows, the wall time and trial count of its sweep, its confirmed configs."""
    rows = list(csv.DictReader(io.StringIO(at_revision("results/classic_leaderboard.csv", revision))))
    summary = at_revision("results/classic_sweep_cpu.md", revision)
    board = at_revision("results/classic_leaderboard.md", revision)
    confirmed = re.findall(r"^\| \d+ \| ([^|]+) \| (\w+) \| [^|]* \| ([^|]+) \| ([\d.]+ ± [\d.]+) \| ([\d.]+ ± [\d.]+) \|",
                           board.split("## Confirmed configurations")[-1], flags=re.M)
    return {"trials": [r for r in rows if r["status"] != "ensemble"],
            "ensembles": {r["trial"]: r for r in rows if r["status"] == "ensemble"},
            "wall_s": int(re.search(r"\*\*(\d+) s\*\*", summary).group(1)),
            "started": re.search(r"== classic: (\d+) trials", summary).group(1),
            "confirmed": [(model, seeds.strip(), val, test) for _, model, seeds, val, test in confirmed]}


def best_per_model(trials: list[dict]) -> dict[str, dict]:
    """Per model: its best trial by validation, how many trials and trial-epochs it got."""
    out: dict[str, dict] = {}
    for row in trials:
        model = out.setdefault(row["model"], {"best": row, "trials": 0, "epochs": 0})
        model["trials"] += 1
        model["epochs"] += int(row["epochs"] or 0)
        if score(row) > score(model["best"]):
            model["best"] = row
    return out


def score(row: dict) -> float:
    """A trial's validation accuracy; one stopped by the budget before its first epoch has none."""
    return float(row["val_accuracy"]) if row["val_accuracy"] else float("-inf")


def section(before: dict, after: dict, labels: tuple[str, str], revision: str, note: str = "") -> str:
    old, new = best_per_model(before["trials"]), best_per_model(after["trials"])
    lines = [MARK, f"Before: {labels[0]} (the record committed at {revision}); after: {labels[1]} (this record). Same "
             "sweep otherwise, same machine, same 60-minute search budget and flags. Per model: the best validation "
             "accuracy the search reached, that trial's test accuracy (blank: not among the trials evaluated on test), "
             "and the trials / trial-epochs the budget gave the model. Produced by "
             "`.venv/bin/python benchmarks/classic_before_after.py` (see its docstring).", "",
             "| model | best val before | best val after | test before | test after | trials / epochs before | "
             "trials / epochs after |", "|---|---|---|---|---|---|---|"]
    for model in sorted(set(old) | set(new), key=lambda m: -max(score(x[m]["best"]) for x in (old, new) if m in x)):
        cells = []
        for key in ("val_accuracy", "test_accuracy"):
            cells += [(side[model]["best"][key] or "") if model in side else "not run" for side in (old, new)]
        cells += [f"{side[model]['trials']} / {side[model]['epochs']}" if model in side else "0 / 0" for side in (old, new)]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    totals = [(len(x["trials"]), sum(int(r["epochs"] or 0) for r in x["trials"]), x["wall_s"]) for x in (before, after)]
    lines += ["", "| | before | after |", "|---|---|---|",
              f"| trials started in the budget | {totals[0][0]} | {totals[1][0]} |",
              f"| trial-epochs trained | {totals[0][1]} | {totals[1][1]} |",
              f"| wall time of the whole command (s) | {totals[0][2]} | {totals[1][2]} |"]
    for name in ("greedy selection", "average of top 3"):
        got = [x["ensembles"].get(name, {}).get("test_accuracy", "") for x in (before, after)]
        lines.append(f"| ensemble, {name}: test accuracy | {got[0]} | {got[1]} |")
    lines += ["", "Confirmed configs (new seeds; mean ± sd), in each record's order:", "",
              "| rank | before: model, seeds, val, test | after: model, seeds, val, test |", "|---|---|---|"]
    for i in range(max(len(before["confirmed"]), len(after["confirmed"]))):
        cells = [", ".join(x["confirmed"][i]) if i < len(x["confirmed"]) else "" for x in (before, after)]
        lines.append(f"| {i + 1} | {cells[0]} | {cells[1]} |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision holding the earlier record")
    parser.add_argument("--label-before", default="before")
    parser.add_argument("--label-after", default="after")
    parser.add_argument("--note", default="", help="a caveat to print under the tables (e.g. what shared the machine)")
    args = parser.parse_args()
    text = section(record(args.before), record(None), (args.label_before, args.label_after), args.before, args.note)
    target = ROOT / "results" / "classic_comparison.md"
    target.write_text(target.read_text().split(MARK)[0].rstrip("\n") + "\n" + text)
    print(text)


if __name__ == "__main__":
    main()
