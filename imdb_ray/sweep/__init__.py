"""Sweeps: a sweep file's `Sweep` (spec.py) -> a Ray Tune run (runner.py; what runs in Ray's processes
for one trial: trial.py) -> the selected trials evaluated on test (evaluate.py); Tune's callbacks in
callbacks.py. Sweep files need only `Sweep`."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imdb_ray.sweep.spec import Sweep, load_sweep, plan

__all__ = ["Sweep", "load_sweep", "plan"]


def __getattr__(name: str):
    """`Sweep`, `load_sweep`, `plan` on first use: Ray's trial processes import this package for
    sweep/trial.py alone and must not pay for the spec's imports (torch, scikit-learn, Optuna)."""
    if name in __all__:
        from imdb_ray.sweep import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'imdb_ray.sweep' has no attribute {name!r}")
