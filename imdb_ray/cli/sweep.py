"""`sweep`: a sweep file on Ray Tune (or only its plan, or its test evaluation)."""
from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from imdb_ray.cli.options import DEFAULT_URI, check_creatable, check_remote_storage, parse_duration, sweep_settings_help
from imdb_ray.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    p_sweep.add_argument("--workers-per-trial", type=int,
                         help="override the sweep file: data-parallel workers per trial (more than 1: DDP on Ray Train)")
    p_sweep.add_argument("--cpus-per-worker", type=float, help="override the sweep file (e.g. run a GPU sweep on a CPU box)")
    p_sweep.add_argument("--gpus-per-worker", type=float, help="override the sweep file (0: CPU only)")
    p_sweep.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
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
                       workers_per_trial=args.workers_per_trial, cpus_per_worker=args.cpus_per_worker,
                       gpus_per_worker=args.gpus_per_worker,
                       time_budget_s=parse_duration(args.time_budget) if args.time_budget is not None else None)
    storage = args.storage or str(Path("ray_results").resolve())
    if "://" in storage:
        check_remote_storage(storage)
    else:
        check_creatable(storage, "give --storage a writable folder")
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

        check_destinations(args.address, uri)
        if args.resume:
            from imdb_ray.sweep.runner import check_resumable

            check_resumable(sweep, storage)
        cluster = {"CPU": os.cpu_count() or 1, "GPU": torch.cuda.device_count()}
        print(plan(sweep, cluster))
        store = "a new file, created when the sweep starts" if tracking.creates_store(uri) else "reachable"
        print(f"  MLflow: {uri} ({store}); Ray results: {sweep.experiment_path(storage)}"
              + (" (--resume: the interrupted sweep there continues)" if args.resume else "")
              + (f"; cluster: {args.address} answers" if args.address else ""))
        if args.estimate:
            from imdb_ray.sweep.cost import cost_lines, estimate

            print(f"  measuring each model's training speed on {sweep.name}'s settings ...", flush=True)
            try:
                concurrency = sweep.concurrency(cluster)
            except UserError:
                concurrency = None
            gpu_bytes = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
            print("\n".join(cost_lines(sweep, *estimate(sweep), concurrency, gpu_bytes)))
        return 0
    from imdb_ray.sweep.runner import run_sweep

    summary = run_sweep(sweep, address=args.address, storage=storage, tracking_uri=uri, resume=args.resume,
                        cache_dir=args.cache_dir, dashboard=args.dashboard,
                        command=shlex.join(["python", "-m", "imdb_ray", *args.argv]), verbose=args.verbose)
    from imdb_ray.sweep.evaluate import print_summary

    print_summary(sweep, summary, uri)
    return 0


def check_destinations(address: str | None, uri: str) -> None:
    """What the sweep itself would refuse before starting, refused by its dry run too: an MLflow store that does not
    answer (a new sqlite file is not created) and an --address where no Ray head answers."""
    from imdb_ray import tracking

    tracking.check_reachable(uri)
    if address:
        from imdb_ray.sweep.cluster import check_cluster_reachable

        check_cluster_reachable(address)
