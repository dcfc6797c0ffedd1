"""Command-line options built from the typed declarations (TrialConfig's fields, each model's parameters),
so `--help`, `models` and validation say the same thing, and the parsing of what users type."""
from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from imdb_ray import contracts
from imdb_ray.contracts import parse_value
from imdb_ray.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from imdb_ray.models.registry import ModelEntry

DEFAULT_URI = "sqlite:///mlflow.db"  # the MLflow store when neither --tracking-uri nor $MLFLOW_TRACKING_URI names one


def parse_duration(text: str) -> float:
    """'90' (seconds), '90s', '45m' or '2h' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise UserError(f"--time-budget {text!r}: give seconds, or a number with s, m or h (e.g. 90m)") from None
    if seconds <= 0:
        raise UserError(f"--time-budget {text!r} must be positive")
    return seconds


def check_creatable(folder: str | Path, remedy: str) -> None:
    """Refuse, creating nothing, an output folder that cannot be made (read-only, under a file, on /proc): its
    nearest existing ancestor must take a new folder. Checked before any work, whose results would go there."""
    import errno
    import os
    import tempfile

    path = Path(folder).expanduser().absolute()
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    try:
        if not ancestor.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".imdb_ray-probe-"))
    except OSError as e:
        raise UserError(f"{path}: cannot create it ({e.strerror or type(e).__name__}); {remedy}") from None


REMOTE_STORAGE_WAIT_S = 30.0


def check_remote_storage(uri: str) -> None:
    """Refuse, before Ray starts, a storage URI Tune would fail on after it (and after the MLflow parent run): resolved
    and looked at as Tune does (pyarrow), so a bucket that does not exist or cannot be reached, missing credentials
    or a scheme pyarrow does not know is one line. One that has not answered in 30 s (GCS looking for credentials
    can wait for minutes) is refused too; the look goes on in a daemon thread, which exit does not wait for."""
    import threading

    import pyarrow.fs

    failure: list[BaseException] = []

    def look() -> None:
        try:
            filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
            filesystem.get_file_info(path)
        except Exception as e:
            failure.append(e)

    looking = threading.Thread(target=look, name="imdb_ray-storage-check", daemon=True)
    looking.start()
    looking.join(REMOTE_STORAGE_WAIT_S)
    remedy = "check the bucket's name, your credentials and the network, or give --storage a local folder"
    if looking.is_alive():
        raise UserError(f"--storage {uri}: no answer in {REMOTE_STORAGE_WAIT_S:g} s; {remedy}")
    if failure:
        why = str(failure[0]).strip().splitlines()[0] if str(failure[0]).strip() else type(failure[0]).__name__
        raise UserError(f"--storage {uri}: {why}; {remedy}")


def positive_int(flag: str) -> Callable[[str], int]:
    """An argparse type: an integer > 0, else one line naming the flag."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"{flag} {text!r} must be an integer > 0") from None
        contracts.check(flag, value, contracts.Positive)
        return value

    return parse


def option_help(doc: str, hint: Any, default: Any) -> str:
    """One line: what it does, what it takes, its default (argparse needs %% for a literal %)."""
    text = f"{doc + '; ' if doc else ''}{contracts.describe(hint)}; default {default!r}"
    return text.replace("%", "%%")


def _base(hint) -> Any:
    """The scalar type a flag's string becomes: int, float, bool or str (None allowed or not)."""
    options = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (typing.Union, type(int | None)) else [hint]
    core = contracts.unwrap(options[0]) if len(options) == 1 else str
    return core if core in (bool, int, float) else str


def add_train_args(p: argparse.ArgumentParser, default_uri: str) -> None:
    from imdb_ray.config import TrialConfig, field_help, field_types

    helps, hints = field_help(), field_types()
    for name, f in TrialConfig.fields().items():
        flag, kind = f"--{name.replace('_', '-')}", _base(hints[name])
        text = option_help(helps[name], hints[name], f.default)
        if kind is bool:
            p.add_argument(flag, dest=name, type=parsed_like(True), help=text)
        elif kind in (int, float):
            p.add_argument(flag, dest=name, type=kind, help=text)
        else:
            p.add_argument(flag, dest=name, help=text)
    p.add_argument("--run-dir", help="where config, history, checkpoint and metrics go (default runs/<time>-<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tracking-uri", help=f"MLflow store for the run and its model (default {default_uri})")
    p.add_argument("--experiment", default="train", help="MLflow experiment of the run (default: train)")


def parsed_like(like: Any) -> Callable[[str], Any]:
    """An argparse type: the flag's text parsed as `like` is typed (contracts.parse_value); a bad value is argparse's
    error, so the line names the flag ("argument --kernel-sizes: expected numbers ...")."""
    def parse(text: str) -> Any:
        try:
            return parse_value(text, like)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = type(like).__name__
    return parse


class _ModelFlags(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(message)


def model_flags(entry: ModelEntry, extra: list[str], command_flags: list[str] = ()) -> dict[str, Any]:
    """A model's parameters from the rest of the command line (--hidden 256 --bidirectional false), parsed by
    argparse with flags made from the registry entry: each typed as its default is, checked later by the
    config against its declared range."""
    parser = _ModelFlags(prog=f"train --model {entry.name}", add_help=False, allow_abbrev=False)
    for name, default in entry.params.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=argparse.SUPPRESS,
                            type=parsed_like(default))
    known, unknown = parser.parse_known_args(extra)
    if unknown:
        if not unknown[0].startswith("--"):
            raise UserError(f"unexpected argument {unknown[0]!r}; model parameters are given as --name value")
        flag = unknown[0].split('=')[0]
        hint = did_you_mean(flag, [f"--{name.replace('_', '-')}" for name in entry.params] + list(command_flags))
        raise UserError(f"unknown option {flag}{hint} (model '{entry.name}' parameters: "
                        f"{', '.join(entry.params)}; see `python -m imdb_ray models`)")
    return vars(known)


def sweep_settings_help() -> str:
    """`sweep --help`'s epilog: every Sweep setting a sweep file may give, what it does and takes."""
    from imdb_ray.sweep.spec import Sweep

    helps, hints = contracts.field_comments(Sweep), contracts.hints(Sweep)
    lines = ["settings of Sweep(...) in a sweep file:"]
    for name, f in Sweep.__dataclass_fields__.items():
        if name in ("source",):
            continue
        default = "required" if f.default is f.default_factory else f"default {f.default!r}"
        lines.append(f"  {name}: {helps.get(name) or ''}{'; ' if helps.get(name) else ''}{contracts.describe(hints[name])}; {default}")
    return "\n".join(lines)


MODELS_CATALOG = Path(__file__).resolve().parent.parent / "models" / "catalog.txt"  # `make docs` writes it


def models_catalog() -> str:
    """What `models` prints and imdb_ray/models/catalog.txt holds: the registry's listing."""
    from imdb_ray.models import list_models

    return "\n".join(models_listing(list_models())) + "\n"


def models_listing(entries: list) -> list[str]:
    """What `models` prints: models built by the same class grouped (the Hugging Face names share one
    constructor), each parameter once with what it takes and its default (per name where they differ)."""
    groups: dict[str, list] = {}
    for entry in entries:
        groups.setdefault(entry.origin, []).append(entry)
    lines = []
    for group in groups.values():
        first = group[0]
        lines.append(f"{', '.join(e.name for e in group)}  [{first.family}] {first.doc}")
        for k in first.params:
            hint = first.types.get(k)
            defaults = {e.name: e.params[k] for e in group}
            shown = (f"default {first.params[k]!r}" if len(set(map(repr, defaults.values()))) == 1 else
                     "default " + ", ".join(f"{n}: {v!r}" for n, v in defaults.items()))
            lines.append(f"    --{k.replace('_', '-'):22s} {contracts.describe(hint) if hint is not None else ''}; {shown}")
    return lines


def settings_markdown() -> str:
    """docs/settings.md: every TrialConfig field, Sweep setting and model parameter with what it does, what it
    takes and its default, written from the declarations (`make docs`; a test keeps the file in step)."""
    from imdb_ray.config import TrialConfig, field_help, field_types
    from imdb_ray.models import list_models
    from imdb_ray.sweep.spec import Sweep

    def row(name: str, doc: str, hint, default) -> str:
        return f"| `{name}` | {doc.replace('|', '/')} | {contracts.describe(hint).replace('|', '/')} | `{default!r}` |"

    lines = ["# Settings", "", "Written by `make docs` from the declarations that validate them (imdb_ray/contracts.py); "
             "`train --help`, `sweep --help` and `models` say the same.", "",
             "## A trial (`train --name value`, or a key of a sweep's space)", "", "| setting | what | takes | default |",
             "|---|---|---|---|"]
    lines += [row(n, field_help()[n], field_types()[n], f.default) for n, f in TrialConfig.fields().items()]
    lines += ["", "## A sweep (`Sweep(...)` in a sweep file)", "", "| setting | what | takes | default |", "|---|---|---|---|"]
    helps, hints = contracts.field_comments(Sweep), contracts.hints(Sweep)
    lines += [row(n, helps.get(n, ""), hints[n], "required" if f.default is f.default_factory else f.default)
              for n, f in Sweep.__dataclass_fields__.items() if n != "source"]
    lines += ["", "## Models (`train --model NAME --param value`, or keys of a model's branch)", ""]
    lines += ["    " + line for line in models_listing(list_models())]
    return "\n".join(lines) + "\n"
