"""On-disk cache for derived data (encoded tensors, word vectors), shared by every trial.

Entries are written to a temporary name and renamed into place, so a process killed mid-write
leaves no entry a reader could mistake for a complete one. A file lock makes concurrent trials
with the same key build it once; the others wait and read it. Each build is appended to
`builds.log` in the cache folder, so "computed once" is something a test can check.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
from filelock import FileLock

from imdb_ray.errors import UserError

log = logging.getLogger(__name__)  # the command line prints imdb_ray's INFO records as progress lines
BUILDS = {"data": "the dataset's splits", "words": "tokens and ids of every split", "vectors": "word vectors",
          "hf": "every split tokenised"}  # what each entry's name prefix holds, as the progress lines call it


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def code_version(*functions: Callable) -> str:
    """A hash of the source of the functions that build an entry: part of its key, so a change to
    tokenisation or encoding builds new entries instead of silently reusing stale ones."""
    return cache_key(*(inspect.getsource(f) for f in functions))


def cached(cache_dir: str | Path, name: str) -> dict[str, Any] | None:
    """The entry stored under `name`, or None (missing or unreadable); creates nothing on a miss."""
    path = Path(cache_dir) / f"{name}.pt"
    try:
        return torch.load(path, weights_only=True) if path.exists() else None
    except Exception:  # truncated or corrupted: load_or_build replaces it
        return None


def load_or_build(cache_dir: str | Path, name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Return the dict of tensors/values stored under `name`, building and storing it on a miss."""
    folder = Path(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cache folder {folder}: cannot create it ({e.strerror}); give --cache-dir a writable folder") from None
    path = folder / f"{name}.pt"
    with FileLock(str(path) + ".lock"):
        if (stored := cached(folder, name)) is not None:
            return stored
        start = time.perf_counter()  # missing, or truncated/corrupted: rebuilt, and replaced atomically
        what = BUILDS.get(name.split("-")[0], name)
        log.info("building %s (not in the cache %s) ...", what, folder)
        value = build()
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(value, tmp)
        os.replace(tmp, path)
        seconds = time.perf_counter() - start
        with open(folder / "builds.log", "a") as builds:
            builds.write(f"{name}\t{seconds:.2f}s\tpid={os.getpid()}\n")
        log.info("built %s in %.1fs", what, seconds)
        return value
