"""MLflow: the one package that writes to it. No Ray here (Tune's callback in sweep/callbacks.py only
translates Tune's events into calls on `TrialLog`).

A sweep is one MLflow experiment holding one parent run per sweep and one nested child run per
trial. store.py knows the store and writes what every run shares (params, a
model as pyfunc, the Model Registry); `SweepRuns` (runs.py) reads and writes the runs of a sweep,
`TrainRun` a `train` command's run; `TrialLog` (trial_log.py) writes a trial's run start, per-epoch
metrics and end, and keeps them in order while the store does not answer.
"""
from imdb_ray.tracking.runs import SweepRuns, Tested, TrainRun
from imdb_ray.tracking.store import (DEFAULT_TRACKING_URI, check_reachable, creates_store, current_store, error_summary, git_commit,
                                     log_model, opens_slowly, register_champion, registered_name,
                                     resolve_tracking_uri, warm_model_logging)
from imdb_ray.tracking.trial_log import FINISH_WAIT_S, RAY_BOOKKEEPING, RETRY_S, TrialLog

__all__ = ["DEFAULT_TRACKING_URI", "FINISH_WAIT_S", "RAY_BOOKKEEPING", "RETRY_S", "SweepRuns", "Tested", "TrainRun",
           "TrialLog", "check_reachable", "creates_store", "current_store", "error_summary", "git_commit", "log_model", "opens_slowly", "register_champion",
           "registered_name", "resolve_tracking_uri", "warm_model_logging"]
