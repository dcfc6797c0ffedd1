"""`models`: the registered models, grouped by what builds them, each parameter with its range and default.

Printed from imdb_ray/models/catalog.txt, which `make docs` writes from the registry (a test holds the two in
step), so listing the models does not import torch and every model module (about a second here).
"""
from __future__ import annotations

import argparse

from imdb_ray.cli.options import MODELS_CATALOG
from imdb_ray.errors import UserError, did_you_mean


def add_parser(sub: argparse._SubParsersAction) -> None:
    p_models = sub.add_parser("models", help="list the registered models and their parameters")
    p_models.add_argument("names", nargs="*", metavar="NAME", help="only these models (default: every one)")
    p_models.set_defaults(run=run)


def catalog_entries(text: str) -> list[tuple[list[str], str]]:
    """The catalog's entries: (the model names a heading line gives, the heading with its indented parameter lines)."""
    entries: list[tuple[list[str], str]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(" ") and entries:
            entries[-1] = (entries[-1][0], entries[-1][1] + line)
        else:
            entries.append((line.split("  [", 1)[0].split(", "), line))
    return entries


def run(args: argparse.Namespace, extra: list[str]) -> int:
    entries = catalog_entries(MODELS_CATALOG.read_text())
    known = sorted(name for names, _ in entries for name in names)
    unknown = [name for name in args.names if name not in known]
    if unknown:
        hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
        raise UserError(f"unknown model {', '.join(map(repr, unknown))}; known models: {', '.join(known)}{hint}")
    print("".join(entry for names, entry in entries if not args.names or set(names) & set(args.names)), end="")
    return 0
