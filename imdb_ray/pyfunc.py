"""A bundle as an MLflow pyfunc model: `mlflow.pyfunc.load_model(...).predict(texts)` answers with
the very code `predict` uses (Predictor), so the two never disagree, and `mlflow models serve`
serves it. The bundle stays the single source: the MLflow model folder holds it under artifacts/.

Input: a DataFrame with a `text` column (the signature MLflow enforces). Output: a DataFrame with `label`,
`prob_negative` and `prob_positive`, one row per input row, in order: the columns `predict --out` writes.

The model is stored as code (pyfunc_model.py, MLflow's "models from code"), not as a pickle, like
the bundle's tensors; loading it needs imdb_ray importable (installed where the model is served).
"""
from __future__ import annotations

import functools
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from imdb_ray.bundle import LABELS, Predictor

EXAMPLE = pd.DataFrame({"text": ["A wonderful, moving film.", "Dull and far too long."]})
REQUIREMENTS = ("torch", "transformers", "peft", "scikit-learn", "pandas", "mlflow")  # the model's requirements.txt


class BundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.predictor = Predictor(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return score_texts(self.predictor, model_input)


def score_texts(predictor: Predictor, model_input: pd.DataFrame | list[str]) -> pd.DataFrame:
    """Texts (a DataFrame's `text` column, its first column, or a list) -> label and probabilities."""
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        texts = ["" if t is None else str(t) for t in model_input[column].tolist()]
    else:
        texts = [str(t) for t in model_input]
    probs = predictor.predict_proba(texts)
    return pd.DataFrame({"label": [LABELS[int(p >= 0.5)] for p in probs], "prob_negative": 1 - probs,
                         "prob_positive": probs})


# once per process: each lookup scans site-packages (~0.6 s for the list on 2 cores); a sweep logs a model per tested trial
_installed_version = functools.cache(version)


def requirements(*names: str) -> list[str]:
    """Pinned to what is installed (without a local build tag such as +cpu, which PyPI does not know)."""
    return [f"{name}=={_installed_version(name).split('+')[0]}" for name in names]


def pyfunc_arguments(bundle: str | Path, predictor: Predictor | None = None) -> dict[str, Any]:
    """What mlflow.pyfunc.save_model / log_model need for a bundle: the model as code, the bundle as its
    artifact, a signature (text in; label and probabilities out), an input example, and requirements
    (given, so MLflow does not infer them by loading the model in a subprocess)."""
    from mlflow.models import infer_signature

    signature = infer_signature(EXAMPLE, score_texts(predictor or Predictor(bundle), EXAMPLE))
    return {"python_model": str(Path(__file__).with_name("pyfunc_model.py")), "artifacts": {"bundle": str(bundle)},
            "signature": signature, "input_example": EXAMPLE, "pip_requirements": requirements(*REQUIREMENTS)}


def save_pyfunc(bundle: str | Path, path: str | Path) -> Path:
    """Write an MLflow model folder (MLmodel, signature, input example) around a bundle folder."""
    mlflow.pyfunc.save_model(str(path), **pyfunc_arguments(bundle))
    return Path(path)
