"""Paired comparisons, McNemar, ensembles and confirmed-config summaries (imdb_ray/compare.py): no Ray, no store."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from imdb_ray.compare import aligned, build_ensembles, confirmed_configs, mcnemar_exact, paired_comparison


def table(rows, labels, probs) -> pd.DataFrame:
    return pd.DataFrame({"row": rows, "label": labels, "prob_positive": probs})


@pytest.mark.parametrize("a_only,b_only", [(0, 0), (3, 0), (5, 9), (40, 25), (120, 160), (1000, 1100)])
def test_mcnemar_matches_scipys_exact_binomial_test(a_only, b_only):
    expected = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    assert mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-9)


def test_paired_interval_matches_a_direct_bootstrap():
    """The multinomial shortcut against resampling review indices directly, on 300 reviews."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    a = np.where(rng.random(300) < 0.85, labels, 1 - labels).astype(float)  # ~85% right
    b = np.where(rng.random(300) < 0.80, labels, 1 - labels).astype(float)
    ours = paired_comparison(labels, a, b, samples=20_000)
    right_a, right_b = (a >= 0.5) == labels, (b >= 0.5) == labels
    idx = rng.integers(0, 300, size=(20_000, 300))
    direct = (right_a[idx].mean(1) - right_b[idx].mean(1))
    assert ours.diff == pytest.approx(right_a.mean() - right_b.mean())
    assert ours.low == pytest.approx(np.percentile(direct, 2.5), abs=0.004)
    assert ours.high == pytest.approx(np.percentile(direct, 97.5), abs=0.004)
    assert ours.a_only == int(np.sum(right_a & ~right_b)) and ours.b_only == int(np.sum(~right_a & right_b))
    same = paired_comparison(labels, a, a)
    assert (same.diff, same.low, same.high, same.p_value) == (0, 0, 0, 1.0)  # identical predictions: no spread


def test_alignment_joins_on_source_rows_and_refuses_other_reviews():
    a = table([5, 1, 9], [1, 0, 1], [0.9, 0.2, 0.4])
    b = table([9, 5, 1], [1, 1, 0], [0.7, 0.6, 0.1])  # same reviews, other order (another seed's shuffle)
    labels, pa, pb = aligned(a, b)
    assert labels.tolist() == [1, 0, 1] and pa.tolist() == [0.9, 0.2, 0.4] and pb.tolist() == [0.6, 0.1, 0.7]
    assert aligned(a, table([5, 1, 7], [1, 0, 1], [0.5, 0.5, 0.5])) is None  # another review


def test_ensembles_choose_members_on_validation_only():
    labels = np.array([1, 0, 1, 0, 1, 0])
    val = {"a": [0.9, 0.1, 0.9, 0.1, 0.4, 0.6],  # 4/6 right
           "b": [0.4, 0.6, 0.9, 0.1, 0.9, 0.1],  # 4/6, wrong where a is right
           "c": [0.6, 0.4, 0.4, 0.6, 0.6, 0.4]}  # 4/6
    test_good = {"a": [0.1] * 6, "b": [0.1] * 6, "c": [0.9, 0.1, 0.9, 0.1, 0.9, 0.1]}  # c is perfect on test
    rows = list(range(6))

    def run(test):
        return build_ensembles([(n, table(rows, labels, val[n]), table(rows, labels, test[n])) for n in "abc"], top=2)

    average, greedy = run(test_good)
    assert average.name == "average of top 2" and average.members == ["a", "b"]
    assert average.val_accuracy == pytest.approx(1.0)  # (a + b) / 2 is right everywhere on validation
    assert average.test.prob_positive.tolist() == pytest.approx([0.1] * 6)
    assert greedy.members[:2] == ["a", "b"] and greedy.val_accuracy == pytest.approx(1.0)
    # the members do not move when test changes: test is scored, never consulted
    flipped = {n: [1 - p for p in test_good[n]] for n in "abc"}
    assert [e.members for e in run(flipped)] == [average.members, greedy.members]
    # a trial that scored other reviews cannot join
    odd = ("d", table([0, 1, 2, 3, 4, 99], labels, val["a"]), table(rows, labels, val["a"]))
    ens = build_ensembles([(n, table(rows, labels, val[n]), table(rows, labels, test_good[n])) for n in "ab"] + [odd], top=3)
    assert "d" not in ens[0].members and ens[0].name == "average of top 2"


def test_confirmed_means_leave_the_searched_run_out():
    original = [SimpleNamespace(trial_id="t1"), SimpleNamespace(trial_id="t2")]
    rerun = lambda t, sel, test: SimpleNamespace(confirms=t, selection=sel, test_accuracy=test)  # noqa: E731
    reruns = [rerun("t1", 0.80, 0.78), rerun("t1", 0.82, 0.80), rerun("t2", 0.85, 0.84), rerun("t2", 0.83, 0.82)]
    first, second = confirmed_configs(original, reruns)
    assert first.original.trial_id == "t2" and first.selection_mean == pytest.approx(0.84)
    assert first.test_mean == pytest.approx(0.83) and first.test_sd == pytest.approx(np.std([0.84, 0.82], ddof=1))
    assert [c.original.trial_id for c in confirmed_configs(original, reruns, descending=False)] == ["t1", "t2"]


def test_the_champion_is_the_best_confirmed_config_not_the_luckiest_seed():
    """The search's best (t1, val 0.90) falls back on new seeds; t2 holds up: t2's trial is crowned (what the
    registry's champion alias and `predict sweep:NAME` then point at). No rerun finished: the search's best stays."""
    from imdb_ray.sweep.evaluate import crown_best_confirmed
    from imdb_ray.tracking import Tested

    tested = [Tested("t1", {}, {}, is_best=True, val=0.90), Tested("t2", {}, {}, is_best=False, val=0.89),
              Tested("t3", {}, {}, is_best=False, val=0.88)]
    rerun = lambda t, val: Tested(f"{t}-r", {"test_accuracy": 0.8}, {}, is_best=False, val=val, confirms=t)  # noqa: E731
    crown_best_confirmed(tested, [rerun("t1", 0.86), rerun("t1", 0.87), rerun("t2", 0.885), rerun("t2", 0.89)])
    assert [t.trial_id for t in tested if t.is_best] == ["t2"]
    crown_best_confirmed(tested, [rerun("t1", 0.86), rerun("t2", 0.87)], descending=False)  # a loss: lower wins
    assert [t.trial_id for t in tested if t.is_best] == ["t1"]
    crown_best_confirmed(tested, [])
    assert [t.trial_id for t in tested if t.is_best] == ["t1"]


def test_a_seed_independent_baseline_is_confirmed_by_its_own_run_and_can_be_crowned():
    """nbsvm/tfidf_lr fit the same weights whatever the seed: the confirmation stage reruns none of them,
    counts their run (sd 0), and the champion rule still lets a baseline beat the neural configs' means."""
    from imdb_ray.sweep.evaluate import crown_best_confirmed
    from imdb_ray.tracking import Tested

    def tested():
        return [Tested("n", {"test_accuracy": 0.91}, {}, is_best=True, model="nbsvm", val=0.905),
                Tested("c", {"test_accuracy": 0.88}, {}, is_best=False, model="cnn", val=0.90)]

    rerun = lambda t, val: Tested(f"{t}-r{val}", {"test_accuracy": 0.87}, {}, is_best=False, model="cnn", val=val, confirms=t)  # noqa: E731
    trials = tested()
    crown_best_confirmed(trials, [rerun("c", 0.89), rerun("c", 0.895)])  # cnn's mean 0.8925 < nbsvm's 0.905
    assert [t.trial_id for t in trials if t.is_best] == ["n"]
    first, second = confirmed_configs(trials, [rerun("c", 0.89), rerun("c", 0.895)], seed_independent=lambda m: m == "nbsvm")
    assert (first.original.trial_id, first.own_run, first.selection_sd, first.test_mean) == ("n", True, 0.0, 0.91)
    assert (second.original.trial_id, second.own_run, len(second.reruns)) == ("c", False, 2)
    trials = tested()
    crown_best_confirmed(trials, [rerun("c", 0.91), rerun("c", 0.92)])  # the cnn config holds up: it wins
    assert [t.trial_id for t in trials if t.is_best] == ["c"]
    # no confirmation stage ran (no reruns): nothing is "confirmed", the baseline included
    assert confirmed_configs(tested(), [], seed_independent=lambda m: True) == []


def test_the_console_names_a_crowned_baseline_as_confirmed_by_its_own_run(capsys):
    from imdb_ray.sweep import Sweep
    from imdb_ray.sweep.evaluate import SweepSummary, print_summary
    from imdb_ray.tracking import Tested

    nbsvm = Tested("n", {"test_accuracy": 0.91, "test_f1": 0.91}, {"test_predictions": "/x/n/test_predictions.csv"},
                   is_best=True, model="nbsvm", val=0.905)
    cnn = Tested("c", {"test_accuracy": 0.88}, {}, is_best=False, model="cnn", val=0.90)
    reruns = [Tested(f"c{k}", {"test_accuracy": 0.87 + k / 100}, {}, is_best=False, model="cnn", val=0.89, confirms="c")
              for k in (1, 2)]
    summary = SweepSummary("p", "/x", trials=2, tested=[nbsvm, cnn], confirmed=reruns)
    print_summary(Sweep(name="s", space={"model": "gru"}), summary, "sqlite:///x.db")
    out = capsys.readouterr().out
    assert "best trial (nbsvm, the best confirmed config): val_accuracy 0.9050, test_accuracy 0.9100" in out
    assert "nbsvm           (n, its own run: seed-independent)  val 0.9050 ± 0.0000  test 0.9100 ± 0.0000" in out
    assert "cnn             (c, 2 seeds)  val 0.8900 ± 0.0000  test 0.8850 ± 0.0071" in out
