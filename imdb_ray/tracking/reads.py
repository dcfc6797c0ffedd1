"""What is read back from MLflow for `report` and `predict`: a sweep's curves and logged predictions, the
sweeps in a store, and a model named by a run id, sweep:NAME or a models:/ URI, downloaded as a bundle folder."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from imdb_ray.errors import UserError, did_you_mean
from imdb_ray.tracking.runs import SweepRuns
from imdb_ray.tracking.store import _client, check_reachable, current_store


def metric_curve(runs: SweepRuns, run_id: str, key: str) -> list[float]:
    """A run's values of `key`, in step order."""
    return [h.value for h in sorted(runs.client.get_metric_history(run_id, key), key=lambda h: h.step)]


def logged_predictions(runs: SweepRuns, run_id: str, split: str) -> pd.DataFrame | None:
    """A tested trial's `<split>_predictions.csv`; None for runs logged before predictions were kept."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a report downloads dozens of tables
            path = runs.client.download_artifacts(run_id, f"{split}_predictions.csv", tmp)
        except Exception:  # older runs: no predictions logged, so no interval
            return None
        table = pd.read_csv(path)
    return table.rename(columns={"index": "row"})  # runs logged before rows were kept: position in the split


def sweeps_in(uri: str) -> list[str]:
    """The experiments of `uri` that hold an imdb_ray sweep."""
    client = _client(uri)
    return sorted(exp.name for exp in client.search_experiments()
                  if client.search_runs([exp.experiment_id], "tags.`imdb_ray.kind` = 'sweep'", max_results=1))


def known_sweeps(name: str, uri: str) -> str:
    """For an error about sweep `name` missing from `uri`: the sweeps it does hold, and the nearest name."""
    known = sweeps_in(uri)
    if not known:
        return "it holds no sweep yet (run one with `sweep`, or pass the --tracking-uri the sweep logged to)"
    return f"its sweeps: {', '.join(known)}{did_you_mean(name, known)}"


def known_models(uri: str) -> str:
    """For an error about a models:/ URI: the registered models of `uri` with their aliases, as URIs to copy."""
    try:
        models = _client(uri).search_registered_models()
    except Exception:  # a store without a registry: the error that led here says enough
        return ""
    uris = [f"models:/{m.name}@{alias}" for m in models for alias in sorted(m.aliases or {})]
    uris += [f"models:/{m.name}/latest" for m in models if not m.aliases]
    return f"; registered here: {', '.join(sorted(uris))}" if uris else "; no model is registered here"


def resolve_model_source(source: str, tracking_uri: str, download_to: str | Path) -> Path:
    """A model's bundle folder from: a folder (a bundle, a `train` run folder or a saved MLflow model), or
    what `download_model` takes (downloaded into `download_to`, a folder the caller removes)."""
    from imdb_ray.bundle import bundle_in

    path = Path(source).expanduser()
    if path.is_dir() and (path / "checkpoint").is_dir() and not (path / "metrics.json").exists():  # an unfinished `train`
        raise UserError(f"{source}: this `train` run has no model yet (it stopped before its end); finish it with its "
                        f"command plus --run-dir {source} --resume, or give a finished run")
    if path.is_dir():
        return bundle_in(path / "model") if (path / "model").is_dir() else bundle_in(path)
    return bundle_in(download_model(source, tracking_uri, download_to))


def download_model(source: str, tracking_uri: str, download_to: str | Path) -> Path:
    """The folder MLflow downloads into `download_to` for an MLflow run id, sweep:NAME (the best trial of that
    sweep's newest run), or a models:/ or runs:/ URI (the Model Registry: models:/imdb_ray-NAME@champion).
    Without a destination MLflow makes a temporary folder per call that nothing removes: a copy of the model
    left behind by every `predict`."""
    import mlflow

    is_run_id = len(source) == 32 and all(c in "0123456789abcdef" for c in source)
    if not (source.startswith(("models:/", "runs:/", "sweep:")) or is_run_id):
        raise UserError(f"{source}: no such folder, and not an MLflow run id, sweep:NAME or models:/ URI")
    check_reachable(tracking_uri, must_exist=True)
    uri = f"runs:/{source}/model" if is_run_id else source
    if source.startswith("sweep:"):
        name = source[len("sweep:"):]
        runs = SweepRuns(tracking_uri, name)
        run_id = runs.best_trial_run_id()
        if run_id is None:
            found = runs.experiment_id() is not None
            raise UserError(f"{source}: no finished sweep '{name}' with a best trial in {tracking_uri}"
                            + ("" if found else f"; {known_sweeps(name, tracking_uri)}"))
        run = runs.client.get_run(run_id)
        print(f"{source}: its best trial {run.data.tags.get('trial_id', '?')} ({run.info.run_name}), MLflow run {run_id}",
              file=sys.stderr)
        uri = f"runs:/{run_id}/model"
    try:
        with current_store(tracking_uri, quiet=True):  # models:/ URIs are read from the current registry
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(download_to)))
    except Exception as e:
        listed = known_models(tracking_uri) if source.startswith("models:/") else ""
        raise UserError(f"{source}: no model in {tracking_uri} ({type(e).__name__}: {str(e).splitlines()[0][:200]}){listed}") from None
