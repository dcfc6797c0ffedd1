"""After the search: rank the trials on validation, evaluate the selected ones once on the test split,
save their predictions and models next to Ray's results, then log them to MLflow (the best one's
model also to the Model Registry as imdb_ray-<sweep>@champion).

Selection is always on validation; test numbers are reported, never used to choose.
"""
from __future__ import annotations

import json
import re
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from imdb_ray.compare import confirmed_configs
from imdb_ray.config import TrialConfig
from imdb_ray.errors import UserError
from imdb_ray.models import seed_independent
from imdb_ray.sweep.spec import Sweep
from imdb_ray.tracking import SweepRuns, Tested, check_reachable, error_summary

if TYPE_CHECKING:
    from ray.tune import Checkpoint, Result
    from imdb_ray.train import Evaluation


@dataclass
class SweepSummary:
    """What a finished sweep (or `--test-only`) tells the command line."""

    parent_run_id: str
    experiment_path: str
    trials: int = 0
    errors: int = 0
    leaderboard: list[dict] = field(default_factory=list)  # the top trials by validation, then the failures
    cut_short: list[str] = field(default_factory=list)  # trials stopped when the sweep's time budget ran out
    tested: list[Tested] = field(default_factory=list)  # evaluated on test by this command
    confirmed: list[Tested] = field(default_factory=list)  # the confirmation reruns, each evaluated on test
    already_tested: int = 0  # --test-only: trials that had a test result before
    mlflow_unwritten: int = 0  # events the tracking store never took

    @property
    def best(self) -> Tested | None:
        return next((t for t in self.tested if t.is_best), None)


def best_value(result: Result, sweep: Sweep) -> float:
    """A trial's best epoch (the weights it keeps), not its last one: the loop's own running best, reported
    with every epoch. Tune's per-trial history is no substitute: a trial resumed after its driver died
    starts a new result.json, which is empty when the trial is cut before its next epoch."""
    best = (result.metrics or {}).get(sweep.selection.best_key)
    if best is not None:
        return float(best)
    values = result.metrics_dataframe[sweep.metric]
    return float(values.max() if sweep.mode == "max" else values.min())


def configuration_error(results: Iterable[Result]) -> str | None:
    """'trial ID failed on its configuration: <the UserError's message>' for the first trial that raised
    imdb_ray's UserError (a user's mistake, not a crash); None when no trial did."""
    for r in results:
        lines = str(r.error or "").splitlines()
        found = [line.split("UserError: ", 1)[1] for line in lines if "UserError: " in line]
        if found:
            trial = (r.metrics or {}).get("trial_id") or (r.path.rsplit("/", 1)[-1] if r.path else "?")
            return f"trial {trial} failed on its configuration: {found[-1].strip()}"
    return None


def best_checkpoint(result: Result) -> Checkpoint | None:
    """The trial's last checkpoint (it holds the best epoch's weights), local or remote."""
    from ray.tune import Checkpoint

    from imdb_ray.sweep.trial import CHECKPOINT_PATH_KEY

    if result.checkpoint is not None:
        return result.checkpoint
    path = result.metrics.get(CHECKPOINT_PATH_KEY)  # ray_train mode: Train's own checkpoint
    return Checkpoint(path) if path else None


def leaderboard(results: Iterable[Result], sweep: Sweep, top: int = 5) -> list[dict]:
    """The best `top` trials by validation (with the parameters their model's branch samples), then every failure."""
    searched = sweep.searched_keys()
    rows = []
    for r in results:
        if r.metrics is None or sweep.metric not in (r.metrics or {}):
            # no error: the sweep's end (time budget, Ctrl-C) stopped it before its first epoch ended
            rows.append({"trial": trial_id_from_path(r.path), "model": (r.config or {}).get("model", "?"),
                         "status": "failed" if r.error else "no epoch",
                         "error": error_summary(r.error) if r.error else "stopped by the sweep's end before its first epoch ended"})
            continue
        model = r.config.get("model")
        rows.append({"trial": r.metrics.get("trial_id", "?"), "model": model, "status": "ok",
                     "params": {k: r.config[k] for k in searched.get(model, []) if k in r.config},
                     sweep.metric: best_value(r, sweep), "epochs": r.metrics.get("epoch")})
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r[sweep.metric], reverse=sweep.mode == "max")
    return ok[:top] + [r for r in rows if r["status"] != "ok"]


def trial_id_from_path(path: str | None) -> str:
    """A trial's id from its folder, which Tune names `<trainable>_<trial id>_<index>_<config...>_<date>` (a trial
    with no result has no metrics to read it from); the folder's name when it has none."""
    name = (path or "?").rstrip("/").rsplit("/", 1)[-1]
    found = re.search(r"_([0-9a-f]{8})_\d+_", name)
    return found.group(1) if found else name


def rank_by_validation(results: Iterable[Result], sweep: Sweep) -> list[Result]:
    """The trials that reported the sweep's metric, best first."""
    return sorted((r for r in results if r.metrics and sweep.metric in r.metrics and r.metrics_dataframe is not None),
                  key=lambda r: best_value(r, sweep), reverse=sweep.mode == "max")


def select_for_test(results: Iterable[Result], sweep: Sweep) -> list[Result]:
    """The top `test_top` (or `ensemble_top`) trials by validation and the configs the confirmation stage
    reruns, then the best of each `test_each` value not among them."""
    ranked = rank_by_validation(results, sweep)
    # ensembles are built from tested trials' predictions; a confirmed config's own trial may become the champion
    chosen = ranked[:max(sweep.test_top, sweep.ensemble_top)]
    confirmed = {id(r) for r in to_confirm(ranked, sweep)}
    chosen += [r for r in ranked[len(chosen):] if id(r) in confirmed]  # in rank order
    if sweep.test_each:
        seen = {r.config.get(sweep.test_each) for r in chosen}
        for r in ranked[len(chosen):]:
            if r.config.get(sweep.test_each) not in seen:
                seen.add(r.config.get(sweep.test_each))
                chosen.append(r)
    return chosen


def confirm_configs(results: Iterable[Result], sweep: Sweep) -> list[dict]:
    """The confirmation stage's trials: the top `confirm_top` configs by validation of models whose training
    depends on the seed, each with `confirm_seeds` new seeds (seed + 1, + 2, ...; the data split stays),
    tagged with the trial they confirm. A seed-independent config (tfidf_lr, nbsvm) would only repeat its
    run: it is confirmed by that run and takes no place in the top."""
    return [{**r.config, "seed": int(r.config.get("seed", 0)) + k, "confirms": r.metrics["trial_id"]}
            for r in to_confirm(rank_by_validation(results, sweep), sweep) for k in range(1, sweep.confirm_seeds + 1)]


def to_confirm(ranked: list, sweep: Sweep) -> list:
    """The top `confirm_top` of the ranked trials whose model's training depends on the seed."""
    return [r for r in ranked if not seed_independent(r.config.get("model", ""))][:sweep.confirm_top]


def crown_best_confirmed(tested: list[Tested], reruns: list[Tested], descending: bool = True) -> None:
    """With a confirmation stage the champion (registered, `predict sweep:NAME`) is the search trial whose
    config has the best mean validation over its new seeds (a seed-independent one: its own run), so a lucky
    seed does not win; without one, or when no rerun finished, the search's best stays."""
    confirmed = confirmed_configs(tested, reruns, descending, seed_independent)
    if confirmed:
        for t in tested:
            t.is_best = t is confirmed[0].original


def evaluate_on_test(sweep: Sweep, results: Iterable[Result], experiment_path: str, skip: set | None = None,
                     every: bool = False) -> list[Tested]:
    """Evaluate the selected trials (`every`: all that finished, none marked best: the confirmation
    reruns) once each on test. Files go next to Ray's results (the caller logs them to MLflow), so
    nothing depends on the tracking store."""
    from pyarrow.fs import FileType

    from imdb_ray.train import evaluate_checkpoint

    chosen = [r for r in results if r.metrics and sweep.metric in r.metrics] if every else select_for_test(results, sweep)
    results_dir = Path(experiment_path) if "://" not in experiment_path else Path("ray_results") / Path(experiment_path).name
    tested = []
    for rank, result in enumerate(chosen):
        cfg = TrialConfig.from_flat(result.config, strict=False)
        trial_id = result.metrics.get("trial_id")
        if skip and trial_id in skip:
            continue
        is_best = rank == 0 and not every
        folder = results_dir / ("best_trial" if is_best else f"tested/{trial_id}")
        files = saved_evaluation(folder, trial_id)
        if files:  # a resumed sweep: this trial was evaluated by an earlier invocation
            print(f"[imdb_ray] test evaluation {rank + 1}/{len(chosen)}: {cfg.model} ({trial_id}) done before, kept", flush=True)
            tested.append(Tested(trial_id, files.pop("metrics"), files, is_best=is_best, model=cfg.model,
                                 val=best_value(result, sweep), confirms=result.config.get("confirms", "")))
            continue
        print(f"[imdb_ray] test evaluation {rank + 1}/{len(chosen)}: {cfg.model} ({trial_id})", flush=True)
        ckpt = best_checkpoint(result)
        if ckpt is not None and ckpt.filesystem.get_file_info(ckpt.path).type == FileType.NotFound:
            print(f"[imdb_ray] test evaluation skipped for {trial_id}: its checkpoint {ckpt.path} is gone", flush=True)
            continue
        with (ckpt.as_directory() if ckpt else nullcontext()) as ckpt_dir:
            evaluation = evaluate_checkpoint(cfg, ckpt_dir)
        tested.append(Tested(trial_id, evaluation.metrics, save_tested(folder, cfg, evaluation, trial_id),
                             is_best=is_best, model=cfg.model, val=best_value(result, sweep),
                             confirms=result.config.get("confirms", "")))
    return tested


def save_tested(folder: Path, cfg: TrialConfig, evaluation: Evaluation, trial_id: str = "") -> dict[str, str]:
    """A tested trial's per-review predictions on test (intervals, paired comparisons) and validation
    (ensembles), and its model bundle (logged to MLflow as the trial's pyfunc model); evaluation.json,
    written last, marks the set complete (a resumed sweep keeps it instead of evaluating again)."""
    from imdb_ray.bundle import save_bundle

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, table in evaluation.predictions.items():
        files[f"{split}_predictions"] = str(folder / f"{split}_predictions.csv")
        table.to_csv(files[f"{split}_predictions"], index=False, float_format="%.6f")
    files["model"] = str(save_bundle(evaluation.model, cfg, folder / "model", evaluation.vocab))
    metrics = {k: float(v) for k, v in evaluation.metrics.items()}
    (folder / "evaluation.json").write_text(json.dumps({"trial_id": trial_id, "metrics": metrics, "files": files}))
    return files


def saved_evaluation(folder: Path, trial_id: str) -> dict | None:
    """The files and metrics ("metrics") an earlier invocation saved for this very trial, if complete."""
    try:
        saved = json.loads((folder / "evaluation.json").read_text())
    except (OSError, ValueError):
        return None
    if saved.get("trial_id") != trial_id or not all(Path(f).exists() for f in saved["files"].values()):
        return None  # another trial's (the best changed), or files gone
    return {**saved["files"], "metrics": saved["metrics"]}


def evaluate_finished_sweep(sweep: Sweep, storage: str, tracking_uri: str) -> SweepSummary:
    """`sweep FILE --test-only`: evaluate a finished sweep's selected trials that have no test result
    yet (after raising test_top or adding test_each); runs no trial and starts no Ray."""
    from ray import tune
    from ray.tune import ExperimentAnalysis, ResultGrid

    experiment_path = sweep.experiment_path(storage)
    check_reachable(tracking_uri, must_exist=True)
    runs = SweepRuns(tracking_uri, sweep.name)
    parent = runs.parent(experiment_path)
    if parent is None or not tune.Tuner.can_restore(experiment_path):
        raise UserError(f"--test-only: no sweep '{sweep.name}' under {storage} with an MLflow parent run in {tracking_uri}")
    parent_id = parent.info.run_id
    grid = ResultGrid(ExperimentAnalysis(experiment_path))
    done = runs.tested_trial_ids(parent_id) & {(r.metrics or {}).get("trial_id") for r in grid}  # search trials only
    tested = evaluate_on_test(sweep, grid, experiment_path, skip=done)
    runs.log_tested(parent_id, tested)
    return SweepSummary(parent_id, experiment_path, tested=tested, already_tested=len(done))


def test_split(sweep: Sweep) -> str:
    data = sweep.space.get("data")
    return "official IMDB test split" if data is None else f"test split of {data}"


def print_confirmed(confirmed: list) -> None:
    """Each confirmed config: its reruns' mean validation and test accuracy (± sd over the new seeds)."""
    if confirmed:
        print("confirmed (new seeds; mean ± sd; rank by validation):")
    for c in confirmed:
        seeds = "its own run: seed-independent" if c.own_run else f"{len(c.reruns)} seeds"
        print(f"  {c.original.model:15s} ({c.original.trial_id}, {seeds})  val {c.selection_mean:.4f} "
              f"± {c.selection_sd:.4f}  test {c.test_mean:.4f} ± {c.test_sd:.4f}")


def print_summary(sweep: Sweep, summary: SweepSummary, uri: str) -> None:
    """What the command line prints when a sweep ends: the leaderboard, the best trial on test, where things are."""
    print(f"\n== {sweep.name}: {summary.trials} trials, {summary.errors} errored ==")
    if summary.cut_short:
        print(f"sweep ended early (time budget {sweep.time_budget_s or 0:g}s): {summary.trials} of {sweep.num_samples} "
              f"samples started; {len(summary.cut_short)} stopped mid-training (MLflow status KILLED, tag "
              "imdb_ray.stopped), ranked on the epochs they finished")
    for row in summary.leaderboard:
        if row["status"] == "ok":
            print(f"  {row['model']:15s} {sweep.metric} {row[sweep.metric]:.4f}  epochs {row['epochs']}  {row['params']}")
        else:
            print(f"  {row['status'].upper()} {row['model']} (trial {row['trial']}): {row['error']}")  # FAILED or NO EPOCH
    best = summary.best
    confirmed = confirmed_configs(summary.tested, summary.confirmed, sweep.mode == "max", seed_independent)
    if best is not None:
        t = best.metrics
        crowned = ", the best confirmed config" if confirmed and confirmed[0].original is best else ""
        print(f"best trial ({best.model}{crowned}): {sweep.metric} {best.val:.4f}, test_accuracy {t['test_accuracy']:.4f}, "
              f"test_f1 {t['test_f1']:.4f} ({test_split(sweep)}, evaluated once)")
        print(f"best trial's test predictions and model: {Path(best.files['test_predictions']).parent}")
        if best.registered:
            print(f"registered: {best.registered}  (python -m imdb_ray predict {best.registered} \"a review\"; "
                  f"mlflow models serve -m {best.registered} --env-manager local)")
    print_confirmed(confirmed)
    if summary.mlflow_unwritten:
        print(f"warning: MLflow {uri} did not answer; {summary.mlflow_unwritten} trial event(s) are not in it. "
              f"Nothing is lost: every trial's metrics are in {summary.experiment_path} (result.json per trial)",
              file=sys.stderr)
    else:
        print(f"MLflow: parent run {summary.parent_run_id} in {uri}  (python -m imdb_ray ui)")
