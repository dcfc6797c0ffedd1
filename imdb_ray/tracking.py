"""MLflow: one parent run per sweep, one nested child run per trial (Ray's MLflowLoggerCallback,
told to nest, to log the trial's resolved config, and to use the epoch as the step)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from imdb_ray.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SECRET_WORDS = ("token", "secret", "password", "key", "credential")


def resolve_tracking_uri(uri: str | None) -> str:
    """Absolute sqlite paths: Tune trials and the UI may run from another working directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def check_reachable(uri: str) -> None:
    """Fail before any trial runs when the tracking store cannot be used."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:
        raise UserError(f"MLflow tracking store {uri} is not reachable ({type(e).__name__}); "
                        "start the server or pass --tracking-uri sqlite:///mlflow.db") from None


def safe_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop anything that looks like a secret; MLflow params are visible to everyone with the UI."""
    return {k: v for k, v in params.items() if not any(w in k.lower() for w in SECRET_WORDS)}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def find_parent_run(uri: str, experiment: str, experiment_path: str) -> str | None:
    """The newest parent run of the sweep stored at experiment_path (for --resume)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"tags.`imdb_ray.experiment_path` = '{experiment_path}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def start_parent_run(uri: str, experiment: str, sweep_file: Path, settings: dict, experiment_path: str,
                     run_id: str | None = None) -> str:
    """Create (or, on --resume, reopen) the sweep's parent run; returns its id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name=f"sweep:{experiment}",
                            tags={"imdb_ray.kind": "sweep", "sweep_file": str(sweep_file), "git_commit": git_commit(),
                                  "imdb_ray.experiment_path": experiment_path})
    for k, v in safe_params(settings).items():
        client.log_param(run.info.run_id, k, str(v)[:500])
    client.log_text(run.info.run_id, sweep_file.read_text(), f"sweep/{sweep_file.name}")
    return run.info.run_id


def trial_callback(uri: str, experiment: str, parent_run_id: str):
    """A Ray Tune MLflowLoggerCallback whose runs are children of the sweep's parent run."""
    from mlflow.tracking import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from imdb_ray.config import TrialConfig

    class NestedTrialRuns(MLflowLoggerCallback):
        def log_trial_start(self, trial):
            if trial not in self._trial_runs:
                client = MlflowClient(uri)
                # A resumed or retried trial continues its own child run (no duplicate runs).
                existing = client.search_runs(
                    [client.get_experiment_by_name(experiment).experiment_id],
                    f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.trial_id = '{trial.trial_id}'")
                cfg = TrialConfig.from_flat(trial.config, strict=False)
                tags = {"mlflow.parentRunId": parent_run_id, "trial_id": trial.trial_id, "trial_name": str(trial),
                        "model": cfg.model, "family": cfg.family, "strategy": cfg.strategy, "seed": str(cfg.seed)}
                if existing:
                    run_id = existing[0].info.run_id
                    client.update_run(run_id, status="RUNNING")
                else:
                    run_id = self.mlflow_util.start_run(tags=tags, run_name=str(trial)).info.run_id
                    self.mlflow_util.log_params(run_id=run_id, params_to_log=safe_params(cfg.flat()))
                    client.log_dict(run_id, cfg.to_dict(), "trial_config.json")
                self._trial_runs[trial] = run_id

        def log_trial_result(self, iteration, trial, result):
            metrics = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=metrics,
                                         step=int(result.get("epoch", iteration)))

    return NestedTrialRuns(tracking_uri=uri, experiment_name=experiment)


def close_orphaned_runs(uri: str, experiment: str, parent_run_id: str, trial_ids: set) -> int:
    """A driver killed between Tune's experiment snapshots loses trials that had already started;
    `--resume` samples replacements. Their child runs keep what they logged, marked KILLED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    orphans = [r for r in client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
               if r.data.tags.get("trial_id") not in trial_ids]
    for run in orphans:
        client.set_tag(run.info.run_id, "imdb_ray.orphaned",
                       "driver killed before Ray Tune snapshotted this trial; --resume ran a replacement")
        client.set_terminated(run.info.run_id, "KILLED")
    return len(orphans)
