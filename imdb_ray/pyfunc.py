"""A bundle as an MLflow pyfunc model: `mlflow.pyfunc.load_model(...).predict(texts)` answers with
the very code `predict` uses (Predictor), so the two never disagree.

Input: a DataFrame with a `text` column (or a list of strings). Output: a DataFrame with `label`,
`prob_negative` and `prob_positive`, one row per input row, in order: the columns `predict --out` writes.
"""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from imdb_ray.bundle import LABELS, Predictor


class BundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.predictor = Predictor(context.artifacts["bundle"])

    def predict(self, context, model_input, params: dict | None = None) -> pd.DataFrame:
        return score_texts(self.predictor, model_input)


def score_texts(predictor: Predictor, model_input) -> pd.DataFrame:
    """Texts (a DataFrame's `text` column, its first column, or a list) -> label and probabilities."""
    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        texts = ["" if t is None else str(t) for t in model_input[column].tolist()]
    else:
        texts = [str(t) for t in model_input]
    probs = predictor.predict_proba(texts)
    return pd.DataFrame({"label": [LABELS[int(p >= 0.5)] for p in probs], "prob_negative": 1 - probs,
                         "prob_positive": probs})


def save_pyfunc(bundle: str | Path, path: str | Path) -> Path:
    """Write an MLflow model folder (MLmodel, signature, input example) around a bundle folder."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({"text": ["A wonderful, moving film.", "Dull and far too long."]})
    signature = infer_signature(example, score_texts(Predictor(bundle), example))
    mlflow.pyfunc.save_model(str(path), python_model=BundleModel(), artifacts={"bundle": str(bundle)},
                             signature=signature, input_example=example)
    return Path(path)
