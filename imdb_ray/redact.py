"""Secrets never leave the process: parameters that look like credentials are dropped before MLflow,
and every file we write (the trial config artifact, the sweep file copy, config.json of runs and
bundles) has token-shaped values and the values of secret-named environment variables replaced."""
from __future__ import annotations

import os
import re
from typing import Any

SECRET_WORDS = {"token", "secret", "password", "passwd", "key", "credential", "credentials", "apikey"}
# Well-known token shapes: Hugging Face, OpenAI-style, AWS access keys, GitHub, Slack.
SECRET_VALUE = re.compile(r"hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abps]-[A-Za-z0-9-]{10,}")
REDACTED = "<redacted>"


def secret_name(name: str) -> bool:
    """hf_token, API_KEY, aws-secret-access-key: yes; num_virtual_tokens, tokenizer, max_vocab: no."""
    return any(part in SECRET_WORDS for part in re.split(r"[^a-z0-9]+", name.lower()))


def _env_secrets() -> list[str]:
    # Key by key, not os.environ.items(): another thread (MLflow's telemetry) may unset a variable between
    # the listing of names and the reading of its value, and items() then raises KeyError.
    values = (os.environ.get(name) for name in list(os.environ) if secret_name(name))
    return [v for v in values if v is not None and len(v) >= 8]


def looks_secret(name: str, value: Any) -> bool:
    """A secret-like name, a token-shaped value, or the value of a secret-named environment variable."""
    text = str(value)
    return secret_name(name) or bool(SECRET_VALUE.search(text)) or any(v in text for v in _env_secrets())


def safe_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop anything that looks like a secret; MLflow params are visible to everyone with the UI."""
    return {k: v for k, v in params.items() if not looks_secret(k, v)}


def redact_text(text: str) -> str:
    text = SECRET_VALUE.sub(REDACTED, text)
    for value in _env_secrets():
        text = text.replace(value, REDACTED)
    return text


def redact(value: Any, name: str = "") -> Any:
    """A copy of a config-like value (dicts, lists, strings) with secrets replaced, structure kept."""
    if name and secret_name(name) and value is not None:
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return redact_text(value) if isinstance(value, str) else value
