"""Models register by name (timm style): `@register_model("gru")` on a class.

A model's tunable parameters are the keyword-only arguments of its constructor, with their
defaults; that signature is the single source of truth for `models`, the CLI and sweep validation.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from imdb_ray import contracts
from imdb_ray.errors import UserError, did_you_mean


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., Any]
    family: str  # a key of models/families.py FAMILIES: word (our tokenizer + word vectors), hf, baseline
    params: dict[str, Any]  # tunable parameter -> default
    doc: str
    check: Callable[..., None] | None = None  # raises UserError for argument combinations that cannot work
    types: dict[str, Any] = field(default_factory=dict)  # parameter -> its annotation (contracts.py), checked before building
    origin: str = ""  # module.qualname of what registered it


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, family: str = "word", defaults: dict[str, Any] | None = None) -> Callable[[type], type]:
    """Register `cls` under `name`; `defaults` overrides some parameter defaults for this name. A name
    already taken by another class is an error (a plugin must not silently replace a built-in model)."""
    def wrap(cls):
        origin = f"{cls.__module__}.{cls.__qualname__}"
        if name in MODELS and MODELS[name].origin != origin:  # the same class again (a module reloaded) is fine
            raise ValueError(f"model name {name!r} is already registered by {MODELS[name].origin}; choose another name")
        sig = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls)
        params = {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
        params.update(defaults or {})
        doc = (inspect.getdoc(cls) or "").splitlines()[0] if inspect.getdoc(cls) else ""
        build = functools.partial(cls, **defaults) if defaults else cls
        types = {k: v for k, v in contracts.hints(cls).items() if k in params}
        MODELS[name] = ModelEntry(name, build, family, params, doc, getattr(cls, "validate_args", None), types, origin)
        return cls

    return wrap


def get_model(name: str) -> ModelEntry:
    _load_builtin()
    if name not in MODELS:
        raise UserError(f"unknown model '{name}'; known models: {', '.join(sorted(MODELS))}{did_you_mean(name, MODELS)}")
    return MODELS[name]


def list_models() -> list[ModelEntry]:
    _load_builtin()
    return [MODELS[k] for k in sorted(MODELS)]


def check_model_args(name: str, args: dict[str, Any]) -> None:
    entry = get_model(name)
    unknown = sorted(set(args) - set(entry.params))
    if unknown:
        raise UserError(f"model '{name}' has no parameter {', '.join(map(repr, unknown))}; "
                        f"its parameters: {', '.join(entry.params) or '(none)'}")
    for key, value in args.items():
        if key in entry.types:
            contracts.check(key, value, entry.types[key])
    if entry.check is not None:
        entry.check(**{**entry.params, **args})


def _load_builtin() -> None:
    # Importing the modules runs their @register_model decorators.
    from imdb_ray.models import baselines, classic, hf  # noqa: F401
