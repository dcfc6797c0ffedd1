"""Non-neural baselines, so every leaderboard shows where the deep models stand."""
from __future__ import annotations

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from imdb_ray.models.registry import register_model


@register_model("tfidf_lr", family="baseline")
def tfidf_lr(*, ngram_max: int = 2, min_df: int = 2, C: float = 4.0, max_features: int | None = None) -> Pipeline:
    """TF-IDF (word n-grams, sublinear tf) + logistic regression; fitted by scikit-learn, not the torch loop."""
    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, ngram_max), min_df=min_df, sublinear_tf=True, max_features=max_features),
        LogisticRegression(C=C, max_iter=1000),
    )
