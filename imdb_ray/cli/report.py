"""`report`: leaderboards, comparisons and plots of sweeps, from an MLflow store."""
from __future__ import annotations

import argparse

from imdb_ray.cli.options import DEFAULT_URI, check_creatable


def add_parser(sub: argparse._SubParsersAction) -> None:
    p_rep = sub.add_parser("report", help="leaderboards with test confidence intervals, and plots, from MLflow")
    p_rep.add_argument("--sweep", action="append", help="a sweep name (repeatable; default: every sweep in the store)")
    p_rep.add_argument("--out", default="reports", help="folder for the files (default reports/, untracked; "
                       "--out results adds to the project's record, never replacing another sweep's files)")
    p_rep.add_argument("--tracking-uri", help=f"MLflow store (default {DEFAULT_URI})")
    p_rep.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from imdb_ray import tracking
    from imdb_ray.report import report

    check_creatable(args.out, "give --out a writable folder")
    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    for path in report(uri, args.sweep, args.out):
        print(path)
    return 0
