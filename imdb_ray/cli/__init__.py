"""Command line: `python -m imdb_ray {train,models,sweep,predict,report,ui}`, one module per command.

Every bad input ends in one line `error: ...` and exit code 2, before any work starts. Building the parser
imports no torch, Ray or MLflow: each command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from contextlib import contextmanager
from typing import Iterator

from imdb_ray.cli import models, predict, report, sweep, train, ui
from imdb_ray.errors import UserError, did_you_mean, one_line, run_outcome
from imdb_ray.interrupts import sigterm_as_interrupt, stop_exit_code, terminated

COMMANDS = (train, models, sweep, predict, report, ui)


class _Parser(argparse.ArgumentParser):
    help_tail = None  # a callable: more help, computed only when help is asked for (it may import what --help need not)
    commands: dict[str, argparse.ArgumentParser] = {}  # the top-level parser's: each command's own parser

    def error(self, message: str):  # one line, exit 2 (argparse's own code), no usage dump
        if choice := re.match(r"argument .+: invalid choice: '(.+?)' \(choose from (.+)\)$", message):
            message += did_you_mean(choice[1], re.findall(r"'([^']+)'", choice[2]))
        print(f"error: {one_line(message)} (see --help)", file=sys.stderr)
        sys.exit(2)

    def flags(self, command: str) -> list[str]:
        """Every option string `command` takes (--n-train, ...): what a misspelt option is matched against."""
        return [flag for flag in self.commands[command]._option_string_actions if flag.startswith("--")]

    def format_help(self) -> str:
        return super().format_help() + (f"\n{self.help_tail()}\n" if self.help_tail else "")


class _Version(argparse.Action):
    """--version: imdb_ray's and its main libraries' versions (for a bug report), from package metadata (no imports)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the versions of imdb_ray and its main libraries")

    def __call__(self, parser, namespace, values, option_string=None):
        from imdb_ray.environment import library_versions

        print(library_versions())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m imdb_ray", description="Text-classification experiments (IMDB by default) as Ray Tune "
                     "sweeps, tracked in MLflow.", epilog="`python -m imdb_ray COMMAND --help`: what a command takes.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    parser.commands = sub.choices
    return parser


@contextmanager
def progress_lines(quiet: bool = False) -> Iterator[None]:
    """For one command: imdb_ray's INFO log records (cache builds, Word2Vec epochs: minutes on the full split) as
    `[imdb_ray] ...` lines on stdout, like the sweep's console; stderr stays the one-line error's. Library callers
    (trials in Ray's workers, benchmarks) attach no handler, so the records stay silent there."""
    logger, handler = logging.getLogger("imdb_ray"), logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("[imdb_ray] %(message)s"))
    before = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False  # printed once, here, whatever the root logger holds
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = before


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    with sigterm_as_interrupt():
        return _run(parser, argv)


def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    if not (sys.argv[1:] if argv is None else argv):  # no command: what there is to run
        parser.print_help()
        return 0
    try:
        args, extra = parser.parse_known_args(argv)  # a flag's own parser may raise UserError too
        args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: what a run records and a resume repeats
        if args.command in ("predict", "sweep"):  # texts (overrides) after an option arrive as extras: they are texts too
            rest = "texts" if args.command == "predict" else "overrides"
            setattr(args, rest, getattr(args, rest) + [e for e in extra if not e.startswith("--")])
            extra = [e for e in extra if e.startswith("--")]
        args.flags = parser.flags(args.command)
        if extra and args.command != "train":
            parser.error(f"unrecognized arguments: {' '.join(extra)}{did_you_mean(extra[0].split('=')[0], args.flags)}")
        with progress_lines(quiet=getattr(args, "quiet", False)):
            return args.run(args, extra)
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM or SIGHUP (interrupts.py): exit codes as a shell reports the signals
        print("terminated" if terminated() else "interrupted", file=sys.stderr)
        return stop_exit_code() if terminated() else 130
    except BrokenPipeError:  # `models | head` closed the pipe: what it wanted was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a run that diverged, does not fit in memory or filled the disk: one line, exit 1 (its run
        outcome = run_outcome(e)  # is FAILED); anything else is a bug, and its traceback the report
        if outcome is None:
            raise
        print(f"error: {one_line(outcome)}", file=sys.stderr)
        return 1
