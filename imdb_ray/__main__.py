"""Command line: `python -m imdb_ray {train,models,sweep,predict,report,ui}`.

Every bad input ends in one line `error: ...` and exit code 2, before any work starts.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from imdb_ray.cli_options import add_train_args, model_flags, models_listing, parse_duration, positive_int, sweep_settings_help
from imdb_ray.errors import UserError, one_line


# ------------------------------------------------------------------------------------------ train
def cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from imdb_ray import tracking
    from imdb_ray.config import TrialConfig
    from imdb_ray.models import get_model
    from imdb_ray.train import load_trial_data, train

    flat = {k: v for k, v in vars(args).items() if k in TrialConfig.fields() and v is not None}
    flat.update(model_flags(get_model(flat.get("model", "gru")), extra))  # the rest: the model's own parameters
    cfg = TrialConfig.from_flat(flat).with_absolute_paths()
    if cfg.device == "cuda":  # a sweep's trials check this on their own machine; here this is that machine
        import torch

        if not torch.cuda.is_available():
            raise UserError("device='cuda' but no CUDA GPU is visible here; use --device auto or cpu")

    run_dir = Path(args.run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model}").resolve()
    if args.resume:
        if not (run_dir / "checkpoint").exists():
            raise UserError(f"--resume: {run_dir}/checkpoint does not exist; pass the --run-dir of an earlier run")
    if not args.experiment.strip():  # MLflow would refuse it only after training
        raise UserError("--experiment needs a name (the MLflow experiment the run goes to)")
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
            opened.append(tracking.TrainRun(uri, args.experiment, cfg, run_dir, shlex.join(["python", "-m", "imdb_ray", *sys.argv[1:]])))
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


# ----------------------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace, extra: list[str]) -> int:
    from imdb_ray.models import list_models

    print("\n".join(models_listing(list_models())))
    return 0


# ------------------------------------------------------------------------------------------ sweep
def cmd_sweep(args: argparse.Namespace, extra: list[str]) -> int:
    from imdb_ray import tracking
    from imdb_ray.sweep import load_sweep, plan

    if args.address and not (args.address == "auto" or ":" in args.address):  # auto, ray://HOST:PORT, HOST:PORT
        raise UserError(f"--address {args.address!r}: use 'auto', 'ray://HOST:10001' or HOST:PORT")
    if args.storage and "://" not in args.storage and not os.path.isabs(os.path.expanduser(args.storage)):
        raise UserError(f"--storage {args.storage!r} must be absolute (or s3://, gs://...): Tune changes the working "
                        "directory of trials")
    if args.num_samples is not None and args.num_samples < 1:
        raise UserError("--num-samples must be >= 1")
    # The same sweep file on other hardware (a GPU cluster's file on a laptop), shorter, or bounded in time.
    sweep = load_sweep(args.file, space_overrides=args.overrides, num_samples=args.num_samples, max_concurrent=args.max_concurrent,
                       cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                       time_budget_s=parse_duration(args.time_budget) if args.time_budget is not None else None)
    storage = args.storage or str(Path("ray_results").resolve())
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    if args.test_only:
        from imdb_ray.sweep.evaluate import evaluate_finished_sweep

        summary = evaluate_finished_sweep(sweep, storage, uri)
        print(f"== {sweep.name}: {len(summary.tested)} trial(s) evaluated on test now, "
              f"{summary.already_tested} had been before ==")
        for t in summary.tested:
            print(f"  {t.trial_id}: test_accuracy {t.metrics['test_accuracy']:.4f}, test_f1 {t.metrics['test_f1']:.4f}")
        return 0
    if args.dry_run:
        import torch

        cluster = {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}
        print(plan(sweep, cluster))
        if args.estimate:
            from imdb_ray.sweep.cost import cost_lines, estimate

            print(f"  measuring each model's training speed on {sweep.name}'s settings ...", flush=True)
            try:
                concurrency = sweep.concurrency(cluster)
            except UserError:
                concurrency = None
            print("\n".join(cost_lines(sweep, estimate(sweep), concurrency)))
        return 0
    from imdb_ray.sweep.runner import run_sweep

    summary = run_sweep(sweep, address=args.address, storage=storage, tracking_uri=uri, resume=args.resume,
                        cache_dir=args.cache_dir, dashboard=args.dashboard,
                        command=shlex.join(["python", "-m", "imdb_ray", *sys.argv[1:]]), verbose=args.verbose)
    from imdb_ray.sweep.evaluate import print_summary

    print_summary(sweep, summary, uri)
    return 0


# ---------------------------------------------------------------------------------------- predict
def cmd_predict(args: argparse.Namespace, extra: list[str]) -> int:
    from imdb_ray import tracking
    from imdb_ray.bundle import Predictor
    from imdb_ray.tracking.reads import resolve_model_source
    from imdb_ray.predict import Chunk, Writer, label_lines, read_chunks, score

    if args.labels and args.label_column:
        raise UserError("give --labels FILE or --label-column, not both")
    if args.file:  # check the inputs before loading a model
        chunks = read_chunks(args.file, text_column=args.text_column, id_column=args.id_column,
                             label_column=args.label_column)
    elif args.texts and args.texts != ["-"]:
        chunks = iter([Chunk([str(i + 1) for i in range(len(args.texts))], args.texts)])
    else:
        chunks = read_chunks(None)
    labels = label_lines(args.labels) if args.labels else None
    predictor = Predictor(resolve_model_source(args.model, tracking.resolve_tracking_uri(args.tracking_uri)))
    out_is_new = args.out is not None and not Path(args.out).exists()
    writer = Writer(args.out, with_text=args.with_text)
    try:
        try:
            scored = score(predictor, chunks, writer, labels=labels, progress=args.out is not None, batch_size=args.batch_size)
        finally:
            writer.close()
        if labels is not None and next(labels, None) is not None:
            raise UserError(f"--labels {args.labels} has more lines than the input has rows ({scored.rows})")
        if scored.rows == 0:
            raise UserError("no text to classify: give texts as arguments, --file FILE, or lines on stdin")
    except UserError:  # a refused input leaves no output file behind (one it did not create is left as it was)
        if out_is_new:
            Path(args.out).unlink(missing_ok=True)
        raise
    if args.out:
        print(f"{scored.rows} row(s) scored -> {args.out}", file=sys.stderr)
    if scored.labels:
        m = scored.metrics()
        print(f"accuracy {m['accuracy']:.4f} (95% CI {m['ci_low']:.4f}-{m['ci_high']:.4f}), macro-F1 {m['f1']:.4f} "
              f"on {len(scored.labels)} labelled row(s)", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------- report
def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    from imdb_ray import tracking
    from imdb_ray.report import report

    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    for path in report(uri, args.sweep, args.out):
        print(path)
    return 0


def cmd_ui(args: argparse.Namespace, extra: list[str]) -> int:
    """`mlflow ui` in a process group of its own, which this command owns: SIGTERM or SIGINT (a
    supervisor's `kill PID`, Ctrl-C) stop the whole server tree, never leaving a piece running."""
    import signal
    import subprocess

    from imdb_ray import tracking

    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    check_port_free(args.host, args.port)
    # MLflow 3.17 would also start a job runner and seven job consumers (~275 MB each) for GenAI
    # features nothing here uses; they slow the start.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    print(f"MLflow UI for {uri} on http://{args.host}:{args.port}", flush=True)
    if not args.verbose:  # the server's library deprecation notices are not the user's to act on
        os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning,ignore::UserWarning")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
                               "--port", str(args.port), "--workers", str(args.workers)], start_new_session=True)
    stopped_by: list[int] = []

    def stop(signum, _frame) -> None:  # only signal here: the wait below returns once the server exits
        stopped_by.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = server.wait()
    finally:
        _stop_group(server)  # what is left of the tree, whatever ended the wait
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + stopped_by[0] if stopped_by else code


def check_port_free(host: str, port: int) -> None:
    """A taken port is refused before the server starts (MLflow would log the clash and exit 0)."""
    import socket

    if not 0 < port < 65536:
        raise UserError(f"--port {port} must be in 1-65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"--port {port} on {host} is not free ({e.strerror}): another server holds it; "
                            "stop it or choose another --port") from None


def _stop_group(proc, grace_s: float = 10.0) -> None:
    """SIGTERM to a process group, SIGKILL to whatever of it is left after grace_s."""
    import signal
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is gone
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)  # the leader may exit before its workers: the next round finds them


class _Parser(argparse.ArgumentParser):
    help_tail = None  # a callable: more help, computed only when help is asked for (it may import what --help need not)

    def error(self, message: str):  # one line, exit 2 (argparse's own code), no usage dump
        print(f"error: {one_line(message)} (see --help)", file=sys.stderr)
        sys.exit(2)

    def format_help(self) -> str:
        return super().format_help() + (f"\n{self.help_tail()}\n" if self.help_tail else "")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m imdb_ray", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_train = sub.add_parser("train", help="train one model locally; model parameters as --name value")
    add_train_args(p_train, DEFAULT_URI)
    sub.add_parser("models", help="list the registered models and their parameters")
    p_sweep = sub.add_parser("sweep", help="run a sweep file (sweeps/*.py) on Ray Tune")
    p_sweep.help_tail = sweep_settings_help  # the Sweep settings, from their declarations
    p_sweep.add_argument("file", help="a sweep file (sweeps/*.py): Python that defines `sweep = Sweep(...)`")
    p_sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                         help="replace a constant of the space (epochs=1, max_len=128) or of one model's branch "
                              "(gru.hidden=64); checked like the file itself")
    p_sweep.add_argument("--address", help="join a cluster: auto | ray://HOST:10001 | HOST:PORT (default: start a local Ray)")
    p_sweep.add_argument("--storage", default=os.environ.get("IMDB_RAY_STORAGE"),
                         help="absolute path or s3://... for checkpoints and results (default $IMDB_RAY_STORAGE or ./ray_results)")
    p_sweep.add_argument("--tracking-uri", help=f"MLflow store (default {DEFAULT_URI})")
    p_sweep.add_argument("--cache-dir", default=os.environ.get("IMDB_RAY_CACHE", ".cache/imdb_ray"),
                         help="shared preprocessing cache (default $IMDB_RAY_CACHE or .cache/imdb_ray)")
    p_sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep (Tuner.restore)")
    p_sweep.add_argument("--dashboard", action="store_true", help="local Ray: start its dashboard on 127.0.0.1:8265")
    p_sweep.add_argument("--dry-run", action="store_true", help="validate and print the plan; start nothing")
    p_sweep.add_argument("--no-estimate", dest="estimate", action="store_false",
                         help="--dry-run: skip measuring each model's speed for the cost estimate")
    p_sweep.add_argument("-v", "--verbose", action="store_true", help="Ray Tune's own status tables and logs, Optuna's too")
    p_sweep.add_argument("--num-samples", type=int, help="override the sweep file")
    p_sweep.add_argument("--max-concurrent", type=int, help="override the sweep file")
    p_sweep.add_argument("--test-only", action="store_true",
                         help="run no trials: evaluate on test the finished sweep's selected trials (test_top, test_each) "
                              "that have no test result yet")
    p_sweep.add_argument("--time-budget", help="stop the sweep after this long, e.g. 5400, 90m, 2h (override the sweep file)")
    p_sweep.add_argument("--cpus-per-worker", type=float, help="override the sweep file (e.g. run a GPU sweep on a CPU box)")
    p_sweep.add_argument("--gpus-per-worker", type=float, help="override the sweep file (0: CPU only)")
    p_pred = sub.add_parser("predict", help="classify texts with a trained model")
    p_pred.add_argument("model", help="a `train` run folder or model folder, an MLflow run id, sweep:NAME (its best trial), "
                        "or models:/imdb_ray-NAME@champion")
    p_pred.add_argument("texts", nargs="*", help="texts to classify ('-' or none: read lines from stdin)")
    p_pred.add_argument("--file", help="one text per line (split on \\n only), or a .csv/.tsv/.jsonl/.parquet table (.gz too)")
    p_pred.add_argument("--text-column", default="text", help="the table's text column (default text)")
    p_pred.add_argument("--id-column", help="the table's id column (default: the row number)")
    p_pred.add_argument("--label-column", help="the table's label column: print accuracy, macro-F1 and a 95%% interval")
    p_pred.add_argument("--labels", help="a file with one label per input row (0/1, neg/pos): print accuracy etc.")
    p_pred.add_argument("--out", help="write id, label, prob_negative, prob_positive to this .csv or .jsonl")
    p_pred.add_argument("--with-text", action="store_true", help="--out: include each row's text")
    p_pred.add_argument("--batch-size", type=positive_int("--batch-size"), default=64, help="texts per forward pass (default 64)")
    p_pred.add_argument("--tracking-uri", help=f"MLflow store for run ids and sweep:NAME (default {DEFAULT_URI})")
    p_rep = sub.add_parser("report", help="leaderboards with test confidence intervals, and plots, from MLflow")
    p_rep.add_argument("--sweep", action="append", help="a sweep name (repeatable; default: every sweep in the store)")
    p_rep.add_argument("--out", default="reports", help="folder for the files (default reports/, untracked; "
                       "--out results adds to the project's record, never replacing another sweep's files)")
    p_rep.add_argument("--tracking-uri", help=f"MLflow store (default {DEFAULT_URI})")
    p_ui = sub.add_parser("ui", help="the MLflow UI for the tracking store (bound to 127.0.0.1)")
    p_ui.add_argument("--tracking-uri", help=f"the MLflow store to show (default $MLFLOW_TRACKING_URI, else {DEFAULT_URI})")
    p_ui.add_argument("--host", default="127.0.0.1", help="0.0.0.0 exposes it to the network: only on purpose")
    p_ui.add_argument("--port", type=int, default=5000, help="the port to serve on (default 5000; a taken one is refused)")
    p_ui.add_argument("-v", "--verbose", action="store_true", help="the server's own warnings too")
    p_ui.add_argument("--workers", type=positive_int("--workers"), default=1, help="server processes (default 1: one person's browser; "
                      "MLflow's own default of 4 costs seconds of start-up per process)")
    return parser


COMMANDS = {"train": cmd_train, "models": cmd_models, "sweep": cmd_sweep, "predict": cmd_predict, "report": cmd_report, "ui": cmd_ui}
DEFAULT_URI = "sqlite:///mlflow.db"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)  # a flag's own parser may raise UserError too
        if args.command in ("predict", "sweep"):  # texts (overrides) after an option arrive as extras: they are texts too
            rest = "texts" if args.command == "predict" else "overrides"
            setattr(args, rest, getattr(args, rest) + [e for e in extra if not e.startswith("--")])
            extra = [e for e in extra if e.startswith("--")]
        if extra and args.command != "train":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return COMMANDS[args.command](args, extra)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `models | head` closed the pipe: what it wanted was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
