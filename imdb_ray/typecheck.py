"""Values checked against their type hints (TrialConfig fields, model constructor parameters, Sweep
settings), so a wrong type is one line naming the key before any work starts, never a TypeError
from deep inside torch. No coercion here: the command line converts its strings before this runs,
and a sweep file's "1e-3" for a float is an error, not a guess."""
from __future__ import annotations

import math
import numbers
import types
import typing
from typing import Any, Union

from imdb_ray.errors import UserError


def hints(obj) -> dict[str, Any]:
    """The resolved type hints of the parameters of a function or a class's __init__ ({} if they cannot be
    read). Not the return type's: a builder may name a type it imports only when called (sklearn's Pipeline)."""
    target = obj.__init__ if isinstance(obj, type) else obj
    try:
        params = types.FunctionType(target.__code__, target.__globals__, closure=target.__closure__)
        params.__annotations__ = {k: v for k, v in target.__annotations__.items() if k != "return"}
        return typing.get_type_hints(params)
    except Exception:
        return {}


def matches(value, hint) -> bool:
    if hint is Any or hint is typing.Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:  # nan and inf never make sense as a setting, and would fail far from here
        return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (tuple, list) or hint in (tuple, list):
        element = args[0] if args else Any
        return isinstance(value, (tuple, list)) and all(matches(v, element) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True  # anything else (a tensor, a class) is for the constructor to check


def describe(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {describe(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", type(None): "None",
            dict: "a dict"}.get(hint, getattr(hint, "__name__", str(hint)))


def check(name: str, value, hint) -> None:
    if not matches(value, hint):
        raise UserError(f"{name}={value!r} must be {describe(hint)}")
