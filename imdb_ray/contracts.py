"""Every setting's type, range and choices, declared once as annotations and checked by one validator.

TrialConfig fields, model constructor parameters and `Sweep` settings are annotated with the types
below (`Literal[...]` for choices, `Annotated[float, Ge(0), Lt(1)]` for ranges). `check` validates a
value against its annotation with pydantic in strict mode (no coercion: a sweep file's "1e-3" for a
float is an error, not a guess; nan and inf are refused), and `describe` turns the same annotation
into the words of an error message, `--help` and `models`. So what is checked and what is shown
cannot drift apart.
"""
from __future__ import annotations

import ast
import functools
import types
import typing
from typing import Annotated, Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt, MinLen
from pydantic import ConfigDict, Strict, TypeAdapter, ValidationError

from imdb_ray.errors import UserError

__all__ = ["Annotated", "Literal", "Ge", "Gt", "Le", "Lt", "Positive", "NonNegative", "PositiveFloat", "NonNegativeFloat",
           "Dropout", "OpenFraction", "Positives", "hints", "check", "matches", "describe", "choices"]

Positive = Annotated[int, Gt(0)]
NonNegative = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]
Dropout = Annotated[float, Ge(0), Lt(1)]  # a probability of dropping: 1 would drop everything
OpenFraction = Annotated[float, Gt(0), Lt(1)]
# A list or a tuple of positive integers (sweep files write lists, the command line "3,4,5"); at least one.
Positives = Annotated[tuple[Positive, ...], Strict(False), MinLen(1)]

_STRICT = ConfigDict(strict=True, allow_inf_nan=False)


def hints(obj: type) -> dict[str, Any]:
    """The resolved annotations (with their Annotated ranges) of a function's parameters or a class's
    __init__ / dataclass fields ({} if they cannot be read). Not the return type's: a builder may name a
    type it imports only when called (sklearn's Pipeline)."""
    target = obj.__init__ if isinstance(obj, type) and not hasattr(obj, "__dataclass_fields__") else obj
    try:
        if isinstance(target, type):
            return typing.get_type_hints(target, include_extras=True)
        params = types.FunctionType(target.__code__, target.__globals__, closure=target.__closure__)
        params.__annotations__ = {k: v for k, v in target.__annotations__.items() if k != "return"}
        return typing.get_type_hints(params, include_extras=True)
    except Exception:
        return {}


@functools.lru_cache(maxsize=None)
def _adapter(hint) -> TypeAdapter:
    return TypeAdapter(hint, config=_STRICT)


def matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    try:
        adapter = _adapter(hint)
    except Exception:  # an annotation pydantic cannot validate (a tensor, a class): the constructor checks it
        return True
    try:
        adapter.validate_python(value)
        return True
    except ValidationError:
        return False


def check(name: str, value: Any, hint: Any) -> None:
    """Raise UserError `name=value must be <what the annotation allows>` when value does not fit."""
    if not matches(value, hint):
        raise UserError(f"{name}={value!r} must be {describe(hint)}")


def choices(hint: Any) -> tuple | None:
    """The allowed values of a Literal (or Literal | None) annotation, else None."""
    hint = unwrap(hint)
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (Union, types.UnionType):
        found = [choices(a) for a in typing.get_args(hint) if a is not type(None)]
        if len(found) == 1 and found[0] is not None:
            return found[0] + ((None,) if type(None) in typing.get_args(hint) else ())
    return None


def describe(hint: Any) -> str:
    """The annotation in words: 'a number in [0, 1)', 'one of head, tail', 'an integer > 0 or None'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _bounded(args[0], [m for m in hint.__metadata__ if isinstance(m, (Ge, Gt, Le, Lt))])
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (tuple, list):
        element = describe(args[0]) if args else "value"
        return "a list of " + _plural(element)
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", type(None): "None",
            dict: "a dict"}.get(hint, getattr(hint, "__name__", str(hint)))


def _bounded(base, bounds: list) -> str:
    noun = describe(base)
    lower = next((b for b in bounds if isinstance(b, (Ge, Gt))), None)
    upper = next((b for b in bounds if isinstance(b, (Le, Lt))), None)
    if base is float:
        noun = "a number"
    if lower is not None and upper is not None:
        lo = f"[{lower.ge}" if isinstance(lower, Ge) else f"({lower.gt}"
        hi = f"{upper.le}]" if isinstance(upper, Le) else f"{upper.lt})"
        return f"{noun} in {lo}, {hi}"
    if lower is not None:
        return f"{noun} >= {lower.ge}" if isinstance(lower, Ge) else f"{noun} > {lower.gt}"
    if upper is not None:
        return f"{noun} <= {upper.le}" if isinstance(upper, Le) else f"{noun} < {upper.lt}"
    return noun


def _plural(text: str) -> str:
    text = text.removeprefix("an ").removeprefix("a ")
    head, _, rest = text.partition(" ")
    return f"{head}s {rest}".rstrip()


def parse_value(text: str, like: Any = None) -> Any:
    """A typed string (a command-line flag, a `key=value` override) -> Python value, guided by the value it
    replaces (bool/tuple/number/str); checking it is `check`'s job."""
    low = text.lower()
    if isinstance(like, bool) or low in ("true", "false"):
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise UserError(f"expected true/false, got {text!r}")
        return low in ("true", "1", "yes")
    if low in ("none", "null"):
        return None
    if isinstance(like, tuple):
        try:
            return tuple(int(x) if x.strip().lstrip("-").isdigit() else float(x) for x in text.split(","))
        except ValueError:
            raise UserError(f"expected numbers separated by commas (like {','.join(map(str, like))}), got {text!r}") from None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(like, float) and isinstance(value, int):
        return float(value)
    return value


def field_comments(cls: type) -> dict[str, str]:
    """Each dataclass field's help: the comment written after it (`lr: PositiveFloat = 1e-3  # the learning rate`)."""
    import inspect
    import re

    found = dict(re.findall(r"^    (\w+): .*?  # (.*)$", inspect.getsource(cls), flags=re.M))
    return {f: found.get(f, "") for f in cls.__dataclass_fields__}


def unwrap(hint: Any) -> Any:
    """The type inside an Annotated[...] (its range left out)."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint
