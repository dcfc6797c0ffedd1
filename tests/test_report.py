"""The statistics behind `report`: bootstrap intervals and Pareto fronts."""
from __future__ import annotations

import numpy as np

from imdb_ray.report import bootstrap_ci, pareto_front


def test_bootstrap_interval_matches_the_binomial_width():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    probs = np.where(rng.random(2000) < 0.85, labels, 1 - labels).astype(float)  # 85% right
    acc, low, high = bootstrap_ci(labels, probs)
    assert abs(acc - 0.85) < 0.03 and low < acc < high
    half = 1.96 * np.sqrt(acc * (1 - acc) / 2000)  # normal approximation, ~0.016
    assert abs((high - low) / 2 - half) < 0.004
    assert bootstrap_ci(labels, probs) == (acc, low, high)  # seeded


def test_perfect_predictions_have_no_spread():
    labels = np.array([0, 1] * 50)
    assert bootstrap_ci(labels, labels.astype(float)) == (1.0, 1.0, 1.0)


def test_pareto_front_keeps_only_undominated_points():
    cost = np.array([10, 20, 30, 15, 40])
    value = np.array([0.80, 0.85, 0.84, 0.79, 0.90])
    assert pareto_front(cost, value).tolist() == [0, 1, 4]  # 15/0.79 and 30/0.84 are beaten
