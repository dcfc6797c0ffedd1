"""The tracking store: where MLflow is and whether it answers, and the writes every kind of run shares
(params, a model logged as pyfunc, the Model Registry)."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from imdb_ray.errors import UserError
from imdb_ray.redact import safe_params

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(uri: str | None) -> str:
    """Absolute sqlite paths: Tune trials and the UI may run from another working directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The file of a sqlite:/// store; None for any other kind."""
    return Path(uri[len("sqlite:///"):].split("?")[0]) if uri.startswith("sqlite:///") else None


def creates_store(uri: str) -> bool:
    """A sqlite file that is not there yet: the first client makes it and MLflow's tables (seconds of CPU)."""
    path = sqlite_file(uri)
    return path is not None and not path.exists()


def opens_slowly(uri: str) -> bool:
    """A sqlite file that holds MLflow's tables (a read-only look, milliseconds): checking it in full imports MLflow's
    SQL store and reads its schema (seconds of CPU, no network wait that could fail fast), so a sweep does that while
    Ray starts (runner.in_background). Any other file is checked before anything starts, and refused at once."""
    path = sqlite_file(uri)
    if path is None or not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'experiments'").fetchone() is not None
    except sqlite3.DatabaseError:
        return False


def check_reachable(uri: str, *, must_exist: bool = False) -> None:
    """Fail before any work starts when the tracking store cannot be used. A sqlite file that is not
    there yet is not created here: the command creates it (and its tables, seconds of CPU) once nothing
    can be refused any more (a sweep while its local Ray starts), so a refused command leaves no empty store. `must_exist`: for commands that only read
    (report, predict, --test-only), where a missing file is a wrong path."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables...": noise
    path = sqlite_file(uri)
    if path is not None and not path.exists():
        if must_exist:
            raise UserError(f"no MLflow store at {uri} (no such file); pass the --tracking-uri that the sweep or "
                            "train run logged to")
        if not (path.parent.is_dir() and os.access(path.parent, os.W_OK)):
            raise UserError(f"MLflow tracking store {uri}: cannot create {path.name} in {path.parent} (no such folder, "
                            "or not writable); pass --tracking-uri sqlite:///mlflow.db")
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:
        if path is not None:  # a file that is there but is no MLflow store (or one MLflow cannot read)
            raise UserError(f"MLflow tracking store {uri} cannot be read as an MLflow store ({type(e).__name__}); "
                            "pass the --tracking-uri of your MLflow store, or a new file") from None
        if "Unsupported" in type(e).__name__:  # MLflow has no store for the scheme: a typo, not a server down
            raise UserError(f"MLflow tracking store {uri}: MLflow has no store for this scheme; use sqlite:///FILE, "
                            "http(s)://HOST:PORT or a database URI") from None
        raise UserError(f"MLflow tracking store {uri} is not reachable ({type(e).__name__}); "
                        "start the server or pass --tracking-uri sqlite:///mlflow.db") from None


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def error_summary(text: str) -> str:
    """The line of a traceback that says what went wrong ("OutOfMemoryError: ...")."""
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0].split(".")[-1]
        if head.endswith(("Error", "Exception", "Interrupt")) or head in ("Killed", "MemoryError"):
            return line[:300]
    return (lines[-1] if lines else "unknown error")[:300]


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, created on first use ("custom model development": MLflow's UI then opens on the
    runs table, not its GenAI pages). A sqlite store's experiment keeps its artifacts beside the store's file, in
    mlruns/<name>: MLflow's default, ./mlruns, is the folder the command that created it happened to run in."""
    exp = client.get_experiment_by_name(name)
    if exp:
        return exp.experiment_id
    db = sqlite_file(client.tracking_uri)
    location = (db.resolve().parent / "mlruns" / re.sub(r"[^\w.-]", "_", name)).as_uri() if db else None
    return client.create_experiment(name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"})


def log_metrics(client: MlflowClient, run_id: str, values: dict[str, Any], step: int) -> None:
    """The numbers among `values` (booleans are not), in one request: all are written, or none."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)])


def _log_params(client, run_id: str, params: dict[str, Any]) -> None:
    """Params in one request, secrets dropped (MLflow params are visible to everyone with the UI)."""
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)[:500]) for k, v in safe_params(params).items()])


# ------------------------------------------------------------------------------ models
@contextlib.contextmanager
def current_store(uri: str, experiment_id: str | None = None, quiet: bool = False) -> Iterator[None]:
    """MLflow's model APIs (Model.log, register_model, models:/ downloads) write to its *current* store
    and experiment, and setting those also sets MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_ID in the
    environment. Set them for one call, then leave the environment as it was. `quiet`: no progress bars
    or per-model notices (a sweep logs several models between its own progress lines)."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")}
    notices = logging.getLogger("mlflow.pyfunc")  # "Validating input example against model signature"
    level = notices.level
    if quiet:
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        notices.setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    if experiment_id is not None:
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id  # read when no experiment was set in this process
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        notices.setLevel(level)
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def log_model(uri: str, run_id: str, bundle: str | Path) -> str:
    """A bundle as run_id's MLflow model `model` (pyfunc: text in; label and probabilities out), and a
    scikit-learn baseline's fitted pipeline also as `sklearn_model` (the sklearn flavour, skops format:
    no pickle). Returns the pyfunc's models:/ URI."""
    import mlflow
    from mlflow.models import Model

    from imdb_ray.bundle import Predictor
    from imdb_ray.pyfunc import pyfunc_arguments, requirements

    predictor = Predictor(bundle)
    # the model goes in the run's own experiment: runs:/RUN/model finds a model only there
    with current_store(uri, _client(uri).get_run(run_id).info.experiment_id, quiet=True):
        info = Model.log(None, name="model", flavor=mlflow.pyfunc, run_id=run_id, **pyfunc_arguments(bundle, predictor))
        if not predictor.cfg.family.neural:
            import mlflow.sklearn

            Model.log(None, name="sklearn_model", flavor=mlflow.sklearn, run_id=run_id, sk_model=predictor.model,
                      serialization_format="skops", pip_requirements=requirements("scikit-learn", "skops"))
    return info.model_uri


def warm_model_logging() -> None:
    """What a process's first log_model pays once, paid ahead: mlflow.pyfunc's imports, the run context MLflow tags
    a logged model with (the entry point's git commit, through GitPython) and MLflow's map of installed packages, which
    it builds to compare a model's pip requirements with this environment (a scan of every distribution: ~1 s of
    the ~2 s here). A sweep calls it in a thread while its trials run, so its end does not wait for it."""
    import importlib

    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils import requirements_utils

    for module in ("mlflow.pyfunc", "mlflow.models", "imdb_ray.bundle", "imdb_ray.pyfunc"):
        importlib.import_module(module)
    resolve_tags()  # cached per process by each context provider
    with contextlib.suppress(AttributeError):  # a private name of MLflow 3.17; without it log_model builds the map
        requirements_utils._init_packages_to_modules_map()


def registered_name(sweep: str) -> str:
    return f"imdb_ray-{sweep}"


def register_champion(uri: str, sweep: str, model_uri: str) -> str:
    """model_uri as a new version of `imdb_ray-<sweep>` in the Model Registry, with the alias `champion`
    (moved from the previous sweep's version, which stays registered). Returns the alias URI."""
    import mlflow

    name = registered_name(sweep)
    with current_store(uri):
        version = mlflow.register_model(model_uri, name).version
    _client(uri).set_registered_model_alias(name, "champion", version)
    return f"models:/{name}@champion"
