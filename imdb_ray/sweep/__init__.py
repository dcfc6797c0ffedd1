"""Sweeps: a sweep file's `Sweep` (spec.py) -> a Ray Tune run (runner.py) -> the selected trials
evaluated on test (evaluate.py); Tune's callbacks in callbacks.py. Sweep files need only `Sweep`."""
from imdb_ray.sweep.spec import Sweep, load_sweep, plan

__all__ = ["Sweep", "load_sweep", "plan"]
