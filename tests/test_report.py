"""The statistics behind `report`: bootstrap intervals and Pareto fronts."""
from __future__ import annotations

import numpy as np

from imdb_ray.compare import bootstrap_ci
from imdb_ray.plots import pareto_front
from imdb_ray.report import TrialRow
from imdb_ray.study import as_confirmed, comparison_path, on_bundled_imdb, write_comparison


def test_bootstrap_interval_matches_the_binomial_width():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 2000)
    probs = np.where(rng.random(2000) < 0.85, labels, 1 - labels).astype(float)  # 85% right
    acc, low, high = bootstrap_ci(labels, probs)
    assert abs(acc - 0.85) < 0.03 and low < acc < high
    half = 1.96 * np.sqrt(acc * (1 - acc) / 2000)  # normal approximation, ~0.016
    assert abs((high - low) / 2 - half) < 0.004
    assert bootstrap_ci(labels, probs) == (acc, low, high)  # seeded


def test_binomial_bootstrap_gives_the_intervals_of_resampling_reviews():
    """Drawing the correct count from Binomial(n, accuracy) is the review-resampling bootstrap without
    its samples x n index: the same interval, to Monte-Carlo noise, at the full test size."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 25_000)
    probs = np.where(rng.random(25_000) < 0.88, labels, 1 - labels).astype(float)
    acc, low, high = bootstrap_ci(labels, probs)
    correct = ((probs >= 0.5).astype(int) == labels).astype(float)
    means = np.array([correct[rng.integers(0, 25_000, 25_000)].mean() for _ in range(2000)])  # the old way
    assert abs(low - np.percentile(means, 2.5)) < 1e-3 and abs(high - np.percentile(means, 97.5)) < 1e-3


def test_perfect_predictions_have_no_spread():
    labels = np.array([0, 1] * 50)
    assert bootstrap_ci(labels, labels.astype(float)) == (1.0, 1.0, 1.0)


def test_pareto_front_keeps_only_undominated_points():
    cost = np.array([10, 20, 30, 15, 40])
    value = np.array([0.80, 0.85, 0.84, 0.79, 0.90])
    assert pareto_front(cost, value).tolist() == [0, 1, 4]  # 15/0.79 and 30/0.84 are beaten


def test_comparison_puts_our_best_matching_trial_beside_theirs(tmp_path):
    def row(name, model, val, peft="none", strategy="ce", **params):
        return TrialRow(run_id=name, name=name, status="FINISHED", model=model, strategy=strategy, peft=peft,
                        all_params={"peft": peft, "n_test": "25000", **params}, val_accuracy=val, sweep="s")

    rows = [row("a", "gru", 0.85), row("b", "gru", 0.88), row("c", "gru", 0.90, strategy="rdrop"),
            row("d", "bert", 0.93, recipe="tuned"), row("e", "deberta_v3", 0.95, peft="lora")]
    rows[1].test_accuracy, rows[1].test_ci = 0.87, (0.866, 0.874)
    text = write_comparison(rows, tmp_path / "comparison.md", ["s"], tmp_path).read_text()
    lines = {ln.split(" | ")[0].strip("| "): ln for ln in text.splitlines() if ln.startswith("| ")}
    assert "88.00%" in lines["GRU"] and "87.00% [86.60%, 87.40%]" in lines["GRU"] and "s / b" in lines["GRU"]  # R-Drop's c is not plain GRU
    assert "93.00%" in lines["BERT_Trainer"] and "s / d" in lines["BERT_Trainer"]
    assert lines["BERT_Native"].endswith("|  |  |  |  |")  # recipe differs: no match
    assert "s / e" in lines["Deberta_LoRA"] and "s / e" not in lines["Deberta_unsloth"]


def test_classic_rows_are_held_against_the_forks_plus_half_a_point(tmp_path):
    def row(name, model, val, test, seeds=0):
        return TrialRow(run_id=name, name=name, status="FINISHED", model=model, strategy="ce", peft="none",
                        all_params={}, val_accuracy=val, test_accuracy=test, sweep="classic", confirmed_seeds=seeds)

    rows = [row("a", "cnn", 0.91, 0.896), row("b", "cnn", 0.92, 0.880),  # b: best validation, but a is confirmed
            row("c", "gru", 0.90, 0.905), row("d", "tfidf_lr", 0.90, 0.9029), row("e", "nbsvm", 0.91, 0.9105),
            row("f", "lstm", 0.95, None)]  # never tested: no row of ours
    rows[0].confirmed_seeds = 2
    text = write_comparison(rows, tmp_path / "comparison.md", ["classic"], tmp_path).read_text()
    table = {ln.split(" | ")[0].strip("| "): ln.split(" | ") for ln in text.split("## Classic rows")[1].splitlines() if ln.startswith("| ")}
    assert table["cnn"][1:3] == ["89.00%", "89.50%"] and table["cnn"][3] == "89.60%" and table["cnn"][-1].strip(" |") == "yes"
    assert table["gru"][2] == "90.60%" and table["gru"][-1].strip(" |") == "no"  # 0.905 < 0.901 + 0.005
    assert table["nbsvm"][2] == "91.00%" and table["nbsvm"][-1].strip(" |") == "yes"
    assert table["lstm"][3] == "" and table["lstm"][-1].strip(" |") == "no tested trial in the sweeps reported"
    assert "Best neural model: gru 90.50% against TF-IDF + LR 90.29%: at or above the baseline." in text


def test_ran_to_its_end_tells_the_scheduler_from_the_loops_own_stops():
    from imdb_ray.plots import ran_to_its_end

    def row(model, curve, epochs=6, patience=2):
        return TrialRow(run_id="r", name="t", status="FINISHED", model=model, strategy="ce", peft="-", params={},
                        all_params={"epochs": str(epochs), "patience": str(patience)}, sweep="s", curve=curve,
                        epochs=len(curve), val_accuracy=max(curve))

    assert ran_to_its_end(row("gru", [0.8, 0.85, 0.86, 0.87, 0.88, 0.89]))       # all its epochs
    assert ran_to_its_end(row("gru", [0.8, 0.9, 0.89, 0.88]))                     # patience 2: its own stop
    assert not ran_to_its_end(row("gru", [0.8, 0.85]))                            # cut at ASHA's rung 2
    assert not ran_to_its_end(row("gru", [0.8, 0.9, 0.89, 0.88], patience=0))     # no patience: the scheduler
    assert ran_to_its_end(row("tfidf_lr", [0.9056]))                              # a baseline fits once


def test_the_verdict_of_a_sweep_stopped_before_its_test_evaluation_says_so():
    """A report of a sweep stopped mid-search (parent KILLED) had said "Only one trial has test predictions" of a
    table where none had any; now it says the sweep has not finished and how to continue it."""
    from imdb_ray.report import verdict

    rows = [TrialRow(run_id="r", name="t", status="KILLED", model="gru", strategy="ce", peft="-", params={}, all_params={},
                     sweep="s", curve=[0.8], epochs=1, val_accuracy=0.8)]
    assert verdict(rows, "KILLED").startswith("**This sweep has not finished** (its MLflow parent run is KILLED)")
    assert "--resume continues it" in verdict(rows, "KILLED")
    assert verdict(rows, "FINISHED") == "No trial has test predictions: nothing to compare."
    rows[0].predictions = {"test": None}
    assert verdict(rows, "FINISHED") == verdict(rows, "KILLED") == "Only one trial has test predictions: nothing to compare the winner with."


def test_a_seed_independent_baseline_shows_as_confirmed_by_its_own_run(tmp_path):
    """The confirmed table: a cnn config with two reruns and nbsvm confirmed by its own run (seeds "own run",
    sd 0), ranked together by mean validation; comparison.md reads the baseline's row as confirmed."""
    from imdb_ray.compare import confirmed_configs
    from imdb_ray.report import write_leaderboard

    def row(name, model, val, test, seed="0", confirms=""):
        return TrialRow(run_id=name, name=name, status="FINISHED", model=model, strategy="ce", peft="none",
                        all_params={"seed": seed}, val_accuracy=val, test_accuracy=test, test_ci=(test - 0.01, test + 0.01),
                        sweep="s", trial_id=name, confirms=confirms, selection=val)

    search = [row("nb", "nbsvm", 0.905, 0.909), row("cn", "cnn", 0.90, 0.886), row("ls", "lstm", 0.89, 0.88)]
    reruns = [row("cn1", "cnn", 0.89, 0.884, seed="1", confirms="cn"), row("cn2", "cnn", 0.894, 0.888, seed="2", confirms="cn")]
    confirmed = confirmed_configs(search, reruns, seed_independent=lambda m: m == "nbsvm")
    assert [(c.original.name, c.own_run) for c in confirmed] == [("nb", True), ("cn", False)]
    board = write_leaderboard("s", {"run_id": "p"}, search, tmp_path, confirmed=confirmed)[0].read_text()
    table = [ln.split(" | ") for ln in board.split("## Confirmed configurations")[1].splitlines() if ln.startswith("| 1") or ln.startswith("| 2")]
    assert [(t[1], t[4], t[6]) for t in table] == [("nb", "own run", "0.9090 ± 0.0000"), ("cn", "2", "0.8860 ± 0.0028")]
    as_row = as_confirmed(search[0], confirmed)
    assert as_row.confirmed_seeds == 1 and as_row.test_ci == search[0].test_ci and "seed-independent" in as_row.name


def test_the_leaderboard_says_when_trials_ran_on_other_machines_or_libraries(tmp_path):
    """A cluster of mixed nodes, or a node with other libraries than the driver's: the header counts the trials of
    each (the same seeds can train to other numbers there); trials all on the driver's setup add nothing."""
    from imdb_ray.report import write_leaderboard

    def row(name, machine, versions):
        return TrialRow(run_id=name, name=name, status="FINISHED", model="gru", strategy="ce", peft="none", sweep="s",
                        val_accuracy=0.8, selection=0.8, machine=machine, versions=versions)

    driver = {"run_id": "p", "versions": "imdb_ray 0.1.0 (torch 2.13.0+cpu)", "machine": "x86_64, 2 CPUs"}
    same = [row(n, "x86_64, 2 CPUs", driver["versions"]) for n in "abc"]
    board = write_leaderboard("s", driver, same, tmp_path)[0].read_text()
    assert "driven from x86_64, 2 CPUs" in board and "The trials ran" not in board
    mixed = same[:2] + [row("d", "x86_64, 16 CPUs, 1 x NVIDIA H100", "imdb_ray 0.1.0 (torch 2.13.0+cu128)")]
    header = write_leaderboard("s", driver, mixed, tmp_path)[0].read_text().splitlines()[2]
    assert ("The trials ran on 2 kinds of machine: 2 trial(s) on x86_64, 2 CPUs; 1 trial(s) on x86_64, 16 CPUs, "
            "1 x NVIDIA H100. The trials ran with 2 sets of libraries: 2 trial(s) with imdb_ray 0.1.0 (torch 2.13.0+cpu); "
            "1 trial(s) with imdb_ray 0.1.0 (torch 2.13.0+cu128).") in header
    other = [row(n, "x86_64, 2 CPUs", "imdb_ray 0.1.0 (torch 2.12.0+cpu)") for n in "ab"]
    header = write_leaderboard("s", driver, other, tmp_path)[0].read_text().splitlines()[2]
    assert header.endswith(" The trials ran with other libraries than the driver: 2 trial(s) with imdb_ray 0.1.0 (torch 2.12.0+cpu).")


def test_leaderboard_params_are_the_keys_that_vary_where_they_exist():
    """A setting every neural run shares (amp, embed_dim) is not a varying parameter just because the
    baseline's run lacks it; a searched key (lr) or one that differs across models (hidden) is."""
    from imdb_ray.report import _varying_params

    runs = [{"model": "gru", "amp": "True", "embed_dim": "100", "lr": "0.001", "hidden": "64", "seed": "0"},
            {"model": "gru", "amp": "True", "embed_dim": "100", "lr": "0.003", "hidden": "128", "seed": "1"},
            {"model": "cnn", "amp": "True", "embed_dim": "100", "lr": "0.002", "num_filters": "100"},
            {"model": "tfidf_lr", "C": "4.0"}]
    assert _varying_params(runs) == ["hidden", "lr", "model"]


def test_a_comparison_never_replaces_one_drawn_from_other_sweeps_and_only_imdb_sweeps_are_compared(tmp_path):
    def row(name, sweep, **params):
        return TrialRow(run_id=name, name=name, status="FINISHED", model="gru", strategy="ce", peft="none",
                        all_params={"n_test": "None", **params}, val_accuracy=0.8, sweep=sweep)

    assert comparison_path(tmp_path, ["classic"]) == tmp_path / "comparison.md"  # none there yet
    write_comparison([row("a", "classic")], tmp_path / "comparison.md", ["classic"], tmp_path)
    assert comparison_path(tmp_path, ["classic"]) == tmp_path / "comparison.md"  # its own sweeps: rewritten
    assert comparison_path(tmp_path, ["smoke"]) == tmp_path / "comparison-smoke.md"  # another sweep's: beside it
    assert on_bundled_imdb([row("a", "s"), row("b", "s", data="None")])
    assert not on_bundled_imdb([row("a", "s", data="/home/me/tweets")])  # a user's own data: no study to compare with


def test_learning_curves_show_the_best_trial_of_each_model_compared_else_the_top_trials():
    """A sweep's top trials are often one model's (four NB-SVM points and one CNN in the classic record): a sweep
    that compares models draws each model's best trial; a one-model sweep of strategies, each strategy's best;
    a sweep of one configuration family, its top trials."""
    from imdb_ray.plots import compared, curve_trials

    def row(name, model, val, strategy="ce"):
        return TrialRow(run_id=name, name=name, status="FINISHED", model=model, strategy=strategy, peft="none",
                        all_params={}, val_accuracy=val, sweep="s", curve=[val])

    classic = [row("nb1", "nbsvm", 0.903), row("nb2", "nbsvm", 0.900), row("cnn1", "cnn", 0.899),
               row("nb3", "nbsvm", 0.897), row("gru1", "gru", 0.89), row("cnn2", "cnn", 0.88)]
    assert compared(classic) == "model"
    shown, title = curve_trials(classic, "model", top=5)
    assert [r.name for r in shown] == ["nb1", "cnn1", "gru1"] and title == "best trial of each model"

    strategies = [row("a", "gru", 0.87, "rdrop"), row("b", "gru", 0.86, "rdrop"), row("c", "gru", 0.85, "ce"),
                  row("d", "gru", 0.84, "supcon")]
    assert compared(strategies) == "strategy"
    shown, title = curve_trials(strategies, "strategy", top=5)
    assert [r.name for r in shown] == ["a", "c", "d"] and title == "best trial of each strategy"
    peft = [row("hf peft=lora", "hf", 0.86), row("hf peft=p_tuning", "hf", 0.62)]
    for r, method in zip(peft, ("lora", "p_tuning")):
        r.peft = method
    assert compared(peft) == "peft" and curve_trials(peft, "peft", top=5)[1] == "best trial of each PEFT method"

    one = [row(f"g{i}", "gru", 0.9 - i / 100) for i in range(7)]
    shown, title = curve_trials(one, compared(one), top=5)
    assert [r.name for r in shown] == ["g0", "g1", "g2", "g3", "g4"] and title == "top 5 trials"

    many = [row(f"m{i}", f"model{i}", 0.9 - i / 100) for i in range(12)]
    shown, title = curve_trials(many, "model", top=5)
    assert len(shown) == 10 and title == "best trial of each model (2 more not shown)"
