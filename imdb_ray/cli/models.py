"""`models`: the registered models, grouped by what builds them, each parameter with its range and default."""
from __future__ import annotations

import argparse

from imdb_ray.cli.options import models_listing


def add_parser(sub) -> None:
    sub.add_parser("models", help="list the registered models and their parameters").set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from imdb_ray.models import list_models

    print("\n".join(models_listing(list_models())))
    return 0
