"""Statistics over per-review predictions: is one trial really better than another on the same test
reviews, and what do ensembles of the top trials score? Pure numpy/scipy; report.py calls it.

Predictions are tables with one row per review (`row` in the source file, `label`, `prob_positive`),
joined on `row`, so trials with different seeds (differently shuffled splits) compare review by review.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

BOOTSTRAP_SAMPLES = 2000


def bootstrap_ci(labels: np.ndarray, probs: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """Accuracy and its percentile bootstrap interval over reviews (resampled with replacement)."""
    correct = (probs >= 0.5).astype(int) == labels
    n = len(correct)
    # Resampling n reviews with replacement draws Binomial(n, accuracy) correct ones: the same
    # distribution as indexing the reviews, without a samples x n index (400 MB at 25k reviews).
    means = np.random.default_rng(seed).binomial(n, correct.mean(), size=samples) / n
    tail = (1 - level) / 2 * 100
    return float(correct.mean()), float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


@dataclass
class Paired:
    """Accuracy of A minus accuracy of B on the same reviews, its 95% paired bootstrap interval, and
    McNemar's exact two-sided p-value (discordant reviews: A right and B wrong, and the reverse)."""

    diff: float
    low: float
    high: float
    p_value: float
    a_only: int
    b_only: int
    n: int


def aligned(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(labels, probs A, probs B) over the reviews both tables scored; None unless they scored the same ones."""
    joined = a.merge(b, on="row", suffixes=("_a", "_b"))
    if len(joined) != len(a) or len(joined) != len(b) or (joined.label_a != joined.label_b).any():
        return None
    return joined.label_a.to_numpy(), joined.prob_positive_a.to_numpy(), joined.prob_positive_b.to_numpy()


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar test: under H0 each discordant review is A's win with probability 1/2."""
    from scipy.stats import binom  # here: a sweep driver imports this module, and scipy.stats costs it ~0.8 s

    n = a_only + b_only
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(a_only, b_only), n, 0.5)))


def paired_comparison(labels: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray,
                      samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Paired:
    """Resampling n reviews with replacement draws the four (A right?, B right?) cells from a
    Multinomial(n, their shares): the difference's bootstrap distribution without a samples x n index."""
    right_a, right_b = (probs_a >= 0.5) == labels, (probs_b >= 0.5) == labels
    n = len(labels)
    cells = np.array([np.sum(right_a & ~right_b), np.sum(~right_a & right_b), np.sum(right_a == right_b)])
    draws = np.random.default_rng(seed).multinomial(n, cells / n, size=samples)
    diffs = (draws[:, 0] - draws[:, 1]) / n
    return Paired(diff=float((cells[0] - cells[1]) / n), low=float(np.percentile(diffs, 2.5)),
                  high=float(np.percentile(diffs, 97.5)), p_value=mcnemar_exact(int(cells[0]), int(cells[1])),
                  a_only=int(cells[0]), b_only=int(cells[1]), n=n)


# ---------------------------------------------------------------------------------------- ensembles
@dataclass
class Ensemble:
    name: str
    members: list[str]  # trial names; a name repeated = that member's weight
    val_accuracy: float
    test: pd.DataFrame  # the ensemble's test predictions (row, label, prob_positive)


def _accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(((probs >= 0.5) == labels).mean())


def _log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(np.where(labels == 1, probs, 1 - probs), 1e-7, 1)
    return float(-np.log(p).mean())


def _average(tables: list[pd.DataFrame]) -> pd.DataFrame:
    out = tables[0][["row", "label"]].copy()
    out["prob_positive"] = np.mean([t.prob_positive.to_numpy() for t in tables], axis=0)
    return out


def build_ensembles(candidates: list[tuple[str, pd.DataFrame, pd.DataFrame]], top: int, rounds: int = 10) -> list[Ensemble]:
    """From (name, val predictions, test predictions), best validation first: the average of the top
    `top`, and greedy forward selection with replacement on validation (Caruana et al. 2004: add the
    member that most improves validation accuracy, ties to lower log-loss; stop when nothing helps).
    Members are chosen on validation only; test is scored once per ensemble."""
    if len(candidates) < 2:
        return []
    # one row order for all: every table sorted by source row (the same reviews, checked)
    first_val, first_test = candidates[0][1], candidates[0][2]
    usable = [(n, v.sort_values("row").reset_index(drop=True), t.sort_values("row").reset_index(drop=True))
              for n, v, t in candidates if aligned(first_val, v) is not None and aligned(first_test, t) is not None]
    labels = usable[0][1].label.to_numpy()
    score = lambda probs: (_accuracy(labels, probs), -_log_loss(labels, probs))  # noqa: E731
    out = []
    k = min(top, len(usable))
    if k >= 2:
        chosen = usable[:k]
        val = _average([v for _, v, _ in chosen]).prob_positive.to_numpy()
        out.append(Ensemble(f"average of top {k}", [n for n, _, _ in chosen], _accuracy(labels, val),
                            _average([t for _, _, t in chosen])))
    picked: list[int] = []
    best = (-1.0, -np.inf)
    for _ in range(rounds):
        trials = [(score(np.mean([usable[j][1].prob_positive.to_numpy() for j in picked + [i]], axis=0)), i)
                  for i in range(len(usable))]
        (value, i) = max(trials, key=lambda t: t[0])
        if value <= best:
            break
        picked.append(i)
        best = value
    if len(set(picked)) >= 2:  # one member is that trial itself, already on the leaderboard
        out.append(Ensemble("greedy selection", [usable[i][0] for i in picked], best[0],
                            _average([usable[i][2] for i in picked])))
    return out


# ------------------------------------------------------------------------------------- confirmation
@dataclass
class Confirmed:
    """A top config trained again with new seeds (the confirmation stage): the original trial, its
    reruns, and their mean and standard deviation. The original's own numbers are left out of the
    means: it was picked for its high validation score, so including it would bias them upward.
    A seed-independent model (`own_run`) is the exception: a rerun would repeat its run exactly, so
    its run is its confirmation (sd 0) and no rerun is spent on it."""

    original: object  # a report TrialRow
    reruns: list
    selection_mean: float
    selection_sd: float
    test_mean: float | None
    test_sd: float | None
    own_run: bool = False


def confirmed_configs(originals: list, reruns: list, descending: bool = True,
                      seed_independent: Callable[[str], bool] = lambda model: False) -> list[Confirmed]:
    """Group reruns by the trial they confirm (`confirms` = its trial id); best mean selection first.
    Where a confirmation stage ran (some rerun exists), each tested original of a seed-independent
    model joins as confirmed by its own run, so the ranking can still crown a baseline."""
    out = []
    sd = lambda a: float(a.std(ddof=1)) if len(a) > 1 else 0.0  # noqa: E731
    for original in originals:
        mine = [r for r in reruns if r.confirms == original.trial_id and r.selection is not None]
        if not mine and reruns and original.selection is not None and original.test_accuracy is not None \
                and seed_independent(original.model):
            out.append(Confirmed(original, [original], original.selection, 0.0, original.test_accuracy, 0.0, own_run=True))
        if not mine:
            continue
        sel = np.array([r.selection for r in mine])
        tests = np.array([r.test_accuracy for r in mine if r.test_accuracy is not None])
        out.append(Confirmed(original, mine, float(sel.mean()), sd(sel), float(tests.mean()) if len(tests) else None,
                             sd(tests) if len(tests) else None))
    return sorted(out, key=lambda c: -c.selection_mean if descending else c.selection_mean)
