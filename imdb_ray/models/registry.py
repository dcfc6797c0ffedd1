"""Models register by name (timm style): `@register_model("gru")` on a class.

A model's tunable parameters are the keyword-only arguments of its constructor, with their
defaults; that signature is the single source of truth for `models`, the CLI and sweep validation.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from imdb_ray.errors import UserError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., Any]
    family: str  # "word" (word vectors + our tokenizer) or "baseline" (not a torch model)
    params: dict[str, Any]  # tunable parameter -> default
    doc: str


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, family: str = "word"):
    def wrap(cls):
        sig = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls)
        params = {p.name: p.default for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY}
        doc = (inspect.getdoc(cls) or "").splitlines()[0] if inspect.getdoc(cls) else ""
        MODELS[name] = ModelEntry(name, cls, family, params, doc)
        return cls

    return wrap


def get_model(name: str) -> ModelEntry:
    _load_builtin()
    if name not in MODELS:
        raise UserError(f"unknown model '{name}'; known models: {', '.join(sorted(MODELS))}")
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


def _load_builtin() -> None:
    # Importing the modules runs their @register_model decorators.
    from imdb_ray.models import baselines, classic  # noqa: F401
