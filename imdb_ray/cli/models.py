"""`models`: the registered models, grouped by what builds them, each parameter with its range and default.

Printed from imdb_ray/models/catalog.txt, which `make docs` writes from the registry (a test holds the two in
step), so listing the models does not import torch and every model module (about a second here).
"""
from __future__ import annotations

import argparse

from imdb_ray.cli.options import MODELS_CATALOG


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("models", help="list the registered models and their parameters").set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    print(MODELS_CATALOG.read_text(), end="")
    return 0
