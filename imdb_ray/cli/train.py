"""`train`: one model, locally: a run folder (config, history, checkpoint, bundle) and an MLflow run."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from imdb_ray.cli.options import DEFAULT_URI, add_train_args, check_creatable, model_flags
from imdb_ray.errors import UserError, run_outcome

if TYPE_CHECKING:
    from imdb_ray.config import TrialConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p_train = sub.add_parser("train", help="train one model locally; model parameters as --name value")
    add_train_args(p_train, DEFAULT_URI)
    p_train.set_defaults(run=run)


# What a resumed run may change: how long it goes on, and where and how fast it runs. Anything else would load the
# checkpoint into another model, or continue it on other data or another optimisation.
RESUME_MAY_CHANGE = frozenset({"epochs", "patience", "device", "amp", "cache_dir", "w2v_workers"})


def check_same_run(run_dir: Path, cfg: TrialConfig) -> None:
    """--resume continues the run in run_dir: the command's settings must be the run's (config.json), but for
    RESUME_MAY_CHANGE. Settings the saved config does not have (an older version's run) are not compared."""
    from imdb_ray.models import get_model
    from imdb_ray.redact import redact

    def flat(d: dict) -> dict:  # one level, the model's parameters with their defaults: what ran, or would run
        return {**{k: v for k, v in d.items() if k != "model_args"}, **get_model(d["model"]).params, **d.get("model_args", {})}

    saved = flat(json.loads((run_dir / "config.json").read_text()))
    asked = flat(json.loads(json.dumps(redact(cfg.to_dict()), default=str)))
    changed = [k for k in asked if k in saved and k not in RESUME_MAY_CHANGE and asked[k] != saved[k]]
    if changed:
        shown = ", ".join(f"{k}={saved[k]!r} (this command: {asked[k]!r})" for k in changed[:3])
        raise UserError(f"--resume: {run_dir} was trained with {shown}; a resumed run keeps its model, data and "
                        "optimisation: repeat its settings (epochs, patience, device may change), or train into a new --run-dir")


def how_to_resume(run_dir: Path, typed: list[str]) -> str:
    """What a stopped `train` says: the command that continues it from the last epoch's checkpoint, if one was kept."""
    from imdb_ray.checkpoint import checkpoint_epoch

    if not (run_dir / "checkpoint").exists():
        return f"stopped before its first epoch ended: nothing to resume in {run_dir}; run the command again"
    argv, i, rest = [], 0, typed
    while i < len(rest):  # the command as typed, less its own --run-dir/--resume, then the ones that continue it
        if rest[i] == "--run-dir":
            i += 2
            continue
        if rest[i] != "--resume" and not rest[i].startswith("--run-dir="):
            argv.append(rest[i])
        i += 1
    return (f"stopped after epoch {checkpoint_epoch(run_dir / 'checkpoint')}; {run_dir} keeps its checkpoint. Continue with: "
            + shlex.join(["python", "-m", "imdb_ray", *argv, "--run-dir", str(run_dir), "--resume"]))


def checked_run(args: argparse.Namespace, extra: list[str]) -> tuple[TrialConfig, Path]:
    """The command's config and run folder, or the one-line error that says what to fix (nothing created yet)."""
    from imdb_ray.config import TrialConfig
    from imdb_ray.models import get_model

    flat = {k: v for k, v in vars(args).items() if k in TrialConfig.fields() and v is not None}
    # the rest: the model's own parameters (a misspelt one matched against them and the command's own flags)
    flat.update(model_flags(get_model(flat.get("model", "gru")), extra, getattr(args, "flags", [])))
    cfg = TrialConfig.from_flat(flat).with_absolute_paths()
    if cfg.device == "cuda":  # a sweep's trials check this on their own machine; here this is that machine
        import torch

        if not torch.cuda.is_available():
            raise UserError("device='cuda' but no CUDA GPU is visible here; use --device auto or cpu")

    run_dir = Path(args.run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model}").resolve()
    if args.resume:
        if not (run_dir / "checkpoint").exists():
            raise UserError(f"--resume: {run_dir}/checkpoint does not exist; pass the --run-dir of an earlier run")
        check_same_run(run_dir, cfg)
    check_creatable(run_dir, "give --run-dir a writable folder")
    if not args.experiment.strip():  # MLflow would refuse it only after training
        raise UserError("--experiment needs a name (the MLflow experiment the run goes to)")
    return cfg, run_dir


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from imdb_ray import tracking
    from imdb_ray.train import load_trial_data, train

    cfg, run_dir = checked_run(args, extra)
    cfg.family.check(cfg)  # a checkpoint whose tokenizer cannot load, before the store or the data cache is touched
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    tracking.check_reachable(uri)
    dataset = load_trial_data(cfg)  # bad data fails here, before the run folder exists
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    opened: list = []

    def mlflow_run():
        """The run's MLflow run, started on first use: a baseline's at the end of its one fit (which may
        still refuse the data: no term left), so a refused fit leaves no run; a neural model's at once."""
        if not opened:
            opened.append(tracking.TrainRun(uri, args.experiment, cfg, run_dir, shlex.join(["python", "-m", "imdb_ray", *args.argv])))
            print(f"MLflow run {opened[0].run_id} in {uri}")
        return opened[0]

    print(f"run folder: {run_dir}")
    if cfg.family.neural:
        mlflow_run()

    def keep_checkpoint(metrics: dict, ckpt: str | None) -> None:
        mlflow_run().epoch(metrics)
        with open(run_dir / "history.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if ckpt is not None:  # replace the previous epoch's checkpoint atomically
            tmp = run_dir / "checkpoint.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(ckpt, tmp)
            shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
            os.replace(tmp, run_dir / "checkpoint")

    try:
        result = train(cfg, dataset=dataset, on_epoch=keep_checkpoint, evaluate_test=True, progress=not args.quiet,
                       resume_from=run_dir / "checkpoint" if args.resume else None)
    except UserError:  # refused before an epoch finished (e.g. no term left for TF-IDF): leave no empty run
        if created and not (run_dir / "checkpoint").exists() and not (run_dir / "history.jsonl").exists():
            shutil.rmtree(run_dir)
            for run in opened:
                run.discard()
        raise
    except BaseException as e:  # Ctrl-C or SIGTERM (KILLED), a crash or a full disk (FAILED): never left RUNNING
        for run in opened:
            run.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        if isinstance(e, KeyboardInterrupt) or (isinstance(e, OSError) and run_outcome(e)):  # the last epoch's checkpoint
            print(how_to_resume(run_dir, args.argv), file=sys.stderr, flush=True)  # is whole: it can go on from there
        raise
    summary = {"model": cfg.model, "best_epoch": result.best_epoch, **result.val, **result.test,
               "seconds": round(result.seconds, 1)}
    (run_dir / "metrics.json").write_text(json.dumps({"summary": summary, "history": result.history}, indent=2))
    from imdb_ray.bundle import save_bundle

    save_bundle(result.model, cfg, run_dir / "model", result.vocab)
    logged = mlflow_run().finish(result.test, run_dir / "model")
    print(f"model: {run_dir / 'model'}  (python -m imdb_ray predict {run_dir} \"a review\")"
          + (f"; MLflow model {logged}" if logged else ""))
    print(f"best epoch {result.best_epoch}: val_accuracy {result.val['val_accuracy']:.4f}  "
          f"test_accuracy {result.test['test_accuracy']:.4f}  test_f1 {result.test['test_f1']:.4f}  "
          f"({result.seconds:.0f}s)")
    return 0
