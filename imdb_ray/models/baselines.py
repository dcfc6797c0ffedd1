"""Non-neural baselines, so every leaderboard shows where the deep models stand."""
from __future__ import annotations

from typing import Annotated, TYPE_CHECKING

import numpy as np

from imdb_ray.contracts import Ge, Gt, Le, Positive, PositiveFloat
from imdb_ray.models.registry import register_model

if TYPE_CHECKING:  # scikit-learn is imported by the builders: every process looks models up here, and a
    from sklearn.pipeline import Pipeline  # torch trial would pay 1.5 s for an import it never uses


# A document-frequency cut-off: a count of documents (>= 1) or a fraction of them (scikit-learn's two meanings).
MinDf = Annotated[int, Ge(1)] | Annotated[float, Gt(0), Le(1)]


def tfidf_lr(*, ngram_max: Positive = 2, min_df: MinDf = 2, C: PositiveFloat = 4.0,
             max_features: Positive | None = None) -> Pipeline:
    """TF-IDF (word n-grams, sublinear tf) + logistic regression; fitted by scikit-learn, not the torch loop."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, ngram_max), min_df=min_df, sublinear_tf=True, max_features=max_features),
        LogisticRegression(C=C, max_iter=1000),
    )


register_model("tfidf_lr", family="baseline")(tfidf_lr)


def nbsvm(*, ngram_max: Positive = 3, min_df: MinDf = 2, C: PositiveFloat = 0.3, alpha: PositiveFloat = 1.0,
          max_features: Positive | None = 2_000_000) -> Pipeline:
    """NBSVM (Wang & Manning 2012) as NB-LR: binarized word n-grams scaled by naive-Bayes log-count ratios + logistic regression."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.pipeline import make_pipeline

    from imdb_ray.models.nb_logistic import NBLogisticRegression

    return make_pipeline(
        CountVectorizer(ngram_range=(1, ngram_max), min_df=min_df, binary=True, max_features=max_features, dtype=np.float32),
        NBLogisticRegression(C=C, alpha=alpha),
    )


register_model("nbsvm", family="baseline")(nbsvm)
