"""NB-LR, the classifier of the nbsvm baseline (a module of its own so that only that baseline imports scikit-learn)."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


class NBLogisticRegression(LogisticRegression):
    """Logistic regression on features scaled by the naive-Bayes log-count ratio
    r = log((p / |p|_1) / (q / |q|_1)), p and q the smoothed (alpha) feature counts of positive and
    negative reviews (Wang & Manning, ACL 2012). After fitting, r is folded into the weights
    (w . (r * x) = (w * r) . x): the fitted model predicts on unscaled features like a plain
    LogisticRegression with these weights, so bundles hold nothing but a linear model."""

    def __init__(self, *, alpha: float = 1.0, C: float = 1.0, max_iter: int = 1000):
        super().__init__(C=C, max_iter=max_iter)
        self.alpha = alpha

    def fit(self, X, y):
        y = np.asarray(y)
        p = self.alpha + np.asarray(X[np.flatnonzero(y == 1)].sum(0)).ravel()
        q = self.alpha + np.asarray(X[np.flatnonzero(y == 0)].sum(0)).ravel()
        ratio = np.log((p / p.sum()) / (q / q.sum()))
        super().fit(X.multiply(ratio).tocsr(), y)
        self.coef_ = self.coef_ * ratio
        return self
