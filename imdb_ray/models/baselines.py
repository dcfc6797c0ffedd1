"""Non-neural baselines, so every leaderboard shows where the deep models stand."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from imdb_ray.errors import UserError
from imdb_ray.models.registry import register_model

if TYPE_CHECKING:  # scikit-learn is imported by the builders: every process looks models up here, and a
    from sklearn.pipeline import Pipeline  # torch trial would pay 1.5 s for an import it never uses


def _check_tfidf_lr(*, ngram_max: int, min_df: int | float, C: float, max_features: int | None) -> None:
    """scikit-learn's own ranges, checked when the config is, not when the pipeline is fitted."""
    if ngram_max < 1:
        raise UserError(f"ngram_max={ngram_max} must be >= 1")
    if not (min_df >= 1 if isinstance(min_df, int) else 0 < min_df <= 1):
        raise UserError(f"min_df={min_df} must be a count >= 1 or a fraction in (0, 1]")
    if C <= 0:
        raise UserError(f"C={C} must be > 0")
    if max_features is not None and max_features < 1:
        raise UserError(f"max_features={max_features} must be >= 1 (or None)")


def tfidf_lr(*, ngram_max: int = 2, min_df: int = 2, C: float = 4.0, max_features: int | None = None) -> Pipeline:
    """TF-IDF (word n-grams, sublinear tf) + logistic regression; fitted by scikit-learn, not the torch loop."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, ngram_max), min_df=min_df, sublinear_tf=True, max_features=max_features),
        LogisticRegression(C=C, max_iter=1000),
    )


tfidf_lr.validate_args = _check_tfidf_lr
register_model("tfidf_lr", family="baseline")(tfidf_lr)


def _check_nbsvm(*, ngram_max: int, min_df: int | float, C: float, alpha: float, max_features: int | None) -> None:
    _check_tfidf_lr(ngram_max=ngram_max, min_df=min_df, C=C, max_features=max_features)
    if alpha <= 0:
        raise UserError(f"alpha={alpha} must be > 0 (the naive-Bayes smoothing count)")


def nbsvm(*, ngram_max: int = 3, min_df: int = 2, C: float = 0.3, alpha: float = 1.0,
          max_features: int | None = 2_000_000) -> Pipeline:
    """NBSVM (Wang & Manning 2012) as NB-LR: binarized word n-grams scaled by naive-Bayes log-count ratios + logistic regression."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.pipeline import make_pipeline

    from imdb_ray.models.nb_logistic import NBLogisticRegression

    return make_pipeline(
        CountVectorizer(ngram_range=(1, ngram_max), min_df=min_df, binary=True, max_features=max_features, dtype=np.float32),
        NBLogisticRegression(C=C, alpha=alpha),
    )


nbsvm.validate_args = _check_nbsvm
register_model("nbsvm", family="baseline")(nbsvm)
