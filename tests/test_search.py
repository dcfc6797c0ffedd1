"""The search engine without Ray running: conditional spaces, the searchers' no-repeat and
every-model guarantees, pruned trials told to Optuna, the metric flowing into trials."""
from __future__ import annotations

import dataclasses
import random

import optuna
import pytest
from ray import tune

from helpers import cli
from imdb_ray.errors import UserError
from imdb_ray.sweep import Sweep
from imdb_ray.sweep.runner import build_search
from imdb_ray.sweep.search import GridSearch, SweepSearch
from imdb_ray.sweep.space import DefineByRun, config_key

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONDITIONAL = {
    "model": {
        "gru": {"lr": tune.loguniform(3e-4, 3e-3), "hidden": tune.choice([128, 256])},
        "cnn": {"lr": tune.loguniform(3e-4, 3e-3), "num_filters": tune.choice([100, 200]),
                "kernel_sizes": tune.choice([(3, 4, 5), (2, 3, 4)])},
        "tfidf_lr": {},
    },
    "dropout": tune.uniform(0.1, 0.5),
    "epochs": 6, "max_len": 256,
}


def drive(search, n: int, score=lambda c: random.random()) -> list[dict]:
    """Ask for n trials one at a time, completing each with score(config) (as Tune would)."""
    configs = []
    for i in range(n):
        config = search.suggest(f"t{i}")
        if config == search.FINISHED:
            break
        configs.append(config)
        search.on_trial_complete(f"t{i}", {search.metric: score(config), "finished": True, "training_iteration": 6})
    return configs


def test_branches_hold_only_the_keys_each_model_uses():
    tree = Sweep(name="c", space=CONDITIONAL).validate().branches()
    assert set(tree["gru"]) == {"lr", "hidden", "dropout", "epochs", "max_len", "metric"}
    assert set(tree["cnn"]) == {"lr", "num_filters", "kernel_sizes", "dropout", "epochs", "max_len", "metric"}
    assert set(tree["tfidf_lr"]) == {"metric"}  # no lr, no dropout, no epochs: a baseline uses none of them
    flat = Sweep(name="f", space={"model": tune.choice(["gru", "cnn", "tfidf_lr"]), "hidden": 16, "num_filters": 8,
                                  "lr": tune.loguniform(1e-3, 1e-2)}).validate().branches()
    assert "hidden" in flat["gru"] and "hidden" not in flat["cnn"] and "num_filters" in flat["cnn"]
    assert set(flat["tfidf_lr"]) == {"metric"}


@pytest.mark.parametrize("space, message", [
    ({"model": {"gru": {"hidden": "big"}}}, "space['model']['gru']['hidden'] value 'big': hidden='big' must be an integer > 0"),
    ({"model": {"gru": {"hidden": tune.choice([64, "big"])}}}, "space['model']['gru']['hidden'] value 'big'"),
    ({"model": {"cnn": {"hidden": 64}}}, "space['model']['cnn']['hidden']: cnn does not use 'hidden' (cnn's parameters"),
    ({"model": {"gru": {"hiden": 64}}}, "space['model']['gru']['hiden']: gru does not use 'hiden'; did you mean hidden? ("),
    ({"model": {"tfidf_lr": {"lr": 1e-3}}}, "space['model']['tfidf_lr']['lr']: tfidf_lr does not use 'lr'"),
    ({"model": {"nope": {}}}, "space['model']['nope']: unknown model 'nope'"),
    ({"model": {"gru": 3}}, "space['model']['gru'] must be a dict"),
    ({"model": {}}, "space['model'] is an empty dict"),
    ({"model": {"tfidf_lr": {}}, "lr": 1e-3}, "space['lr']: no model in ['tfidf_lr'] uses this setting"),
    ({"model": {"gru": {"lr": tune.grid_search([1e-3, 1e-2])}}}, "space['model']['gru']['lr'] needs search='grid'"),
])
def test_a_wrong_branch_is_one_line_naming_it(space, message):
    with pytest.raises(UserError) as e:
        Sweep(name="bad", space=space).validate()
    assert message in str(e.value), str(e.value)


def test_a_wrong_type_in_a_branch_is_exit_2_before_ray_starts(tmp_path, capsys):
    sweep_file = tmp_path / "bad.py"
    sweep_file.write_text("from ray import tune\nfrom imdb_ray.sweep import Sweep\n"
                          "sweep = Sweep(name='bad', space={'model': {'gru': {'hidden': tune.choice([64, 'big'])}, 'cnn': {}}})\n")
    code, err, out = cli(["sweep", str(sweep_file), "--storage", str(tmp_path / "ray")], capsys)
    assert code == 2 and len(err) == 1 and "space['model']['gru']['hidden'] value 'big'" in err[0]
    assert not (tmp_path / "ray").exists()  # refused before Ray or Tune wrote anything


@pytest.mark.parametrize("search", ["optuna", "random"])
def test_a_deterministic_branch_runs_once_and_every_model_is_drawn_first(search):
    sweep = Sweep(name="c", space=CONDITIONAL, search=search, num_samples=20).validate()
    searcher = build_search(sweep, concurrency=1)
    # the baseline scores best: TPE keeps proposing it, and is given the known value instead of a new trial
    configs = drive(searcher, 20, score=lambda c: 0.95 if c["model"] == "tfidf_lr" else random.uniform(0.5, 0.9))
    models = [c["model"] for c in configs]
    assert models[:3] == ["tfidf_lr", "gru", "cnn"]  # the first round covers every branch, the baseline first
    assert models.count("tfidf_lr") == 1 and len(configs) == 20
    assert len({config_key(c) for c in configs}) == 20
    for c in configs:  # only the branch's own keys, never another model's
        assert ("hidden" in c) == (c["model"] == "gru") and ("num_filters" in c) == (c["model"] == "cnn")
        assert c["metric"] == "val_accuracy"
    assert all(c["kernel_sizes"] in [(3, 4, 5), (2, 3, 4)] for c in configs if c["model"] == "cnn")  # tuples come back


def test_a_space_with_nothing_left_to_sample_finishes_early():
    space = {"model": {"tfidf_lr": {}, "gru": {"hidden": tune.choice([16, 32])}}, "epochs": 1}
    sweep = Sweep(name="c", space=space, num_samples=10).validate()
    configs = drive(build_search(sweep, concurrency=1), 10)
    assert sorted((c["model"], c.get("hidden")) for c in configs) == [("gru", 16), ("gru", 32), ("tfidf_lr", None)]


def test_grid_repeats_only_what_differs():
    space = {"model": {"gru": {"lr": tune.grid_search([1e-3, 1e-2]), "seed": tune.grid_search([0, 1])}, "tfidf_lr": {}},
             "epochs": 2}
    sweep = Sweep(name="g", space=space, search="grid", scheduler="fifo", num_samples=2).validate()
    assert sweep.trial_count() == 2 * (4 + 1)
    searcher = build_search(sweep, concurrency=1)
    assert isinstance(searcher, GridSearch)
    configs = drive(searcher, 10)
    assert [c["model"] for c in configs].count("tfidf_lr") == 1 and len(configs) == 5  # the repeats were identical


def test_a_trial_stopped_by_the_scheduler_is_pruned_in_the_study():
    sweep = Sweep(name="c", space=CONDITIONAL, num_samples=4).validate()
    searcher = build_search(sweep, concurrency=1)
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first["model"] != second["model"]
    searcher.on_trial_result("a", {"best_val_accuracy": 0.6, "epoch": 1, "training_iteration": 1})
    # its driver killed and the sweep resumed: Tune counts from 1 again, the loop goes on at epoch 2
    searcher.on_trial_result("a", {"best_val_accuracy": 0.65, "epoch": 2, "training_iteration": 1})
    searcher.on_trial_complete("a", {"best_val_accuracy": 0.7, "epoch": 3, "training_iteration": 2, "finished": False})
    searcher.on_trial_complete("b", {"best_val_accuracy": 0.8, "epoch": 6, "training_iteration": 6, "finished": True})
    a, b = searcher.study.trials[:2]
    assert a.state == optuna.trial.TrialState.PRUNED and a.value == 0.7 and a.intermediate_values == {1: 0.6, 2: 0.65, 3: 0.7}
    assert b.state == optuna.trial.TrialState.COMPLETE and b.value == 0.8
    assert b.intermediate_values == {6: 0.8}  # a COMPLETE trial's last epoch reaches the study too (Tune passes it only here)
    import warnings

    third = searcher.suggest("c")
    assert third is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when a step is reported twice: the last epoch is told once
        searcher.on_trial_result("c", {"best_val_accuracy": 0.75, "epoch": 6, "training_iteration": 6})
        searcher.on_trial_complete("c", {"best_val_accuracy": 0.75, "epoch": 6, "training_iteration": 6, "finished": True})
    assert searcher.study.trials[2].intermediate_values == {6: 0.75}


def test_the_sweep_metric_reaches_every_trial_and_the_searcher():
    sweep = Sweep(name="l", space=CONDITIONAL, metric="val_loss", mode="min", num_samples=3).validate()
    searcher = build_search(sweep, concurrency=1)
    assert searcher.metric == "best_val_loss" and searcher.mode == "min"
    assert all(c["metric"] == "val_loss" for c in drive(searcher, 3))
    with pytest.raises(UserError, match="every trial uses the sweep's metric"):
        Sweep(name="l", space={**CONDITIONAL, "metric": "val_f1"}).validate()


def test_the_study_is_kept_in_sqlite(tmp_path):
    sweep = Sweep(name="c", space=CONDITIONAL, num_samples=5).validate()
    searcher = build_search(sweep, concurrency=1, study=(tmp_path / "optuna.sqlite", "c-1"))
    configs = drive(searcher, 5)
    study = optuna.load_study(study_name="c-1", storage=f"sqlite:///{tmp_path / 'optuna.sqlite'}")  # a new connection
    stored = {t.number: t for t in study.trials}
    for i, config in enumerate(configs):  # every trial that ran is in the file, complete, with its model
        t = stored[searcher.numbers[f"t{i}"]]
        assert t.state == optuna.trial.TrialState.COMPLETE and t.params["model"] == config["model"]


def test_a_resumed_searcher_continues_its_study(tmp_path):
    """--resume: Tune builds the searcher again and restores it from its checkpoint; the study goes on in the same
    sqlite file, with no second first round and no config run twice."""
    sweep = Sweep(name="c", space=CONDITIONAL, num_samples=6).validate()
    study = (tmp_path / "optuna.sqlite", "c-1")
    searcher = build_search(sweep, concurrency=1, study=study)
    before = drive(searcher, 3)
    searcher.save(str(tmp_path / "searcher.pkl"))
    resumed = build_search(sweep, concurrency=1, study=study)  # what Tuner.restore does: construct, then restore
    assert not resumed.study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # no second first round queued
    resumed.restore(str(tmp_path / "searcher.pkl"))
    after = [resumed.suggest(f"u{i}") for i in range(3)]
    for i, config in enumerate(after):
        resumed.on_trial_complete(f"u{i}", {resumed.metric: 0.5, "finished": True, "epoch": 6})
    assert len({config_key(c) for c in before + after}) == 6
    stored = optuna.load_study(study_name="c-1", storage=f"sqlite:///{study[0]}")
    assert [t.params["model"] for t in stored.trials[:3]] == ["tfidf_lr", "gru", "cnn"]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in stored.trials) >= 6
    assert not [t for t in stored.trials if t.state == optuna.trial.TrialState.WAITING]


def test_define_by_run_names_parameters_per_model():
    space = DefineByRun(Sweep(name="c", space=CONDITIONAL).validate().branches())
    study = optuna.create_study(direction="maximize")
    for _ in range(6):
        trial = study.ask()
        config = space(trial)
        assert set(trial.params) == {"model"} | {f"{config['model']}.{k}" for k in ("lr", "hidden", "num_filters",
                                                                                      "kernel_sizes", "dropout") if k in config}
        study.tell(trial, 0.5)


def test_sweep_search_is_what_build_search_returns():
    assert isinstance(build_search(Sweep(name="c", space=CONDITIONAL).validate(), concurrency=2), SweepSearch)


class FakeTrial:
    def __init__(self, trial_id, model, status, epoch=0, value=None):
        self.trial_id, self.status, self.config = trial_id, status, {"model": model}
        self.last_result = {"epoch": epoch, **({"best_val_accuracy": value} if value is not None else {})}


def test_the_console_prints_a_sweep_line_while_trials_run_and_an_eta_from_this_run_only(capsys):
    """Regression: the periodic line was an `on_step` hook, a name Tune never calls (its hook is `on_step_end`),
    so an hour-long trial printed nothing. And a resumed sweep gets its callbacks back from Tune's pickle:
    the clock and the trials done before it must not make up its ETA."""
    from ray.tune.callback import Callback

    from imdb_ray.sweep.callbacks import ConsoleProgress

    now = [0.0]
    console = ConsoleProgress("best_val_accuracy", "max", total=10, searched={}, epochs={"cnn": 6, "transformer": 6, "tfidf_lr": 1},
                             every_s=60, clock=lambda: now[0])
    assert all(hasattr(Callback, hook) for hook in ("on_step_end", "on_trial_complete", "on_trial_error", "setup"))
    now[0] = 10_000.0  # the pickled callback comes back hours later
    console.setup()
    done = [FakeTrial(str(i), "cnn", "TERMINATED", 6, 0.88) for i in range(3)]
    running = FakeTrial("r", "transformer", "RUNNING", epoch=2, value=0.8628)
    console.on_step_end(iteration=1, trials=done + [running])
    assert capsys.readouterr().out == ""  # not yet a minute
    now[0] += 61
    console.on_step_end(iteration=2, trials=done + [running])
    line = capsys.readouterr().out.strip()
    assert line == "[imdb_ray] sweep: 3 done, 1 running (transformer epoch 2/6 val_accuracy 0.8628), 6 left; 1m01s elapsed"
    now[0] += 120  # nothing moved since that line: quiet for ten minutes, not one
    console.on_step_end(iteration=3, trials=done + [running])
    assert capsys.readouterr().out == ""
    running.last_result = {"epoch": 3, "best_val_accuracy": 0.8702}  # an epoch ends: the next minute says so
    console.on_step_end(iteration=4, trials=done + [running])
    assert "(transformer epoch 3/6 val_accuracy 0.8702), 6 left; 3m01s elapsed" in capsys.readouterr().out
    now[0] += 599
    console.on_step_end(iteration=5, trials=done + [running])
    assert capsys.readouterr().out == ""
    now[0] += 1
    console.on_step_end(iteration=5, trials=done + [running])
    assert "13m01s elapsed" in capsys.readouterr().out  # a long epoch: a line every ten minutes all the same
    now[0] += 1200 - 781  # twenty minutes into this run, the running trial ends: one trial per 20 minutes from here
    running.status = "TERMINATED"
    console.on_trial_complete(iteration=6, trials=done + [running], trial=running)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[imdb_ray] trial r transformer: best val_accuracy 0.8702, 3/6 epochs")
    assert out[1] == "[imdb_ray] sweep: 4 done, 0 running, 6 left; 20m00s elapsed, ETA 2h00m"
    baseline = FakeTrial("b", "tfidf_lr", "TERMINATED", epoch=1, value=0.8861)  # fitted in one pass: 1/1, not 1/6
    console.on_trial_complete(iteration=7, trials=done + [running, baseline], trial=baseline)
    assert capsys.readouterr().out.startswith("[imdb_ray] trial b tfidf_lr: best val_accuracy 0.8861, 1/1 epochs")


def test_a_sweep_knows_each_models_epoch_ceiling():
    sweep = Sweep(name="x", space={"model": {"gru": {"epochs": tune.choice([2, 5])}, "cnn": {}, "tfidf_lr": {}}, "epochs": 3})
    assert sweep.epochs_by_model() == {"gru": 5, "cnn": 3, "tfidf_lr": 1}
    assert sweep.max_epochs() == 5
    # ASHA refuses a grace period longer than a trial (an assertion deep in Ray): a one-line error first
    with pytest.raises(UserError, match=r"grace_period=6 is more than the 5 epoch\(s\) a trial runs; lower it or raise epochs"):
        dataclasses.replace(sweep, grace_period=6).validate()
    with pytest.raises(UserError, match="must be an integer"):
        dataclasses.replace(sweep, reduction_factor=1).validate()
    assert dataclasses.replace(sweep, grace_period=6, scheduler="fifo").validate().grace_period == 6  # no ASHA: no bound


def test_mlflow_child_runs_are_named_from_their_model_and_sampled_values():
    from imdb_ray.sweep.callbacks import run_name

    searched = {"gru": ["lr", "hidden"], "tfidf_lr": []}
    assert run_name({"model": "gru", "lr": 0.0233456, "hidden": 128, "epochs": 6}, searched) == "gru lr=0.0233 hidden=128"
    assert run_name({"model": "tfidf_lr"}, searched) == "tfidf_lr"
    assert run_name({"model": "gru", "lr": 0.001, "hidden": 64, "seed": 2, "confirms": "abc"}, searched) == \
        "confirm seed 2: gru lr=0.001 hidden=64"


def test_dry_run_shows_each_domain_as_the_tune_call_that_makes_it():
    from imdb_ray.sweep.space import candidates, describe

    def fail(message):
        raise UserError(message)

    shown = {describe(d): candidates("x", d, fail) for d in (tune.qloguniform(1e-4, 1e-2, 1e-4), tune.quniform(0.1, 0.9, 0.1),
                                                              tune.lograndint(1, 100), tune.qrandint(2, 20, 4), tune.randint(1, 5))}
    assert shown == {"tune.qloguniform(0.0001, 0.01, 0.0001)": [0.0001, 0.01], "tune.quniform(0.1, 0.9, 0.1)": [0.1, 0.9],
                     "tune.lograndint(1, 100)": [1, 99], "tune.qrandint(2, 20, 4)": [4, 20], "tune.randint(1, 5)": [1, 4]}
    for domain, (low, high) in zip((tune.qrandint(2, 20, 4), tune.lograndint(1, 100), tune.quniform(0.1, 0.9, 0.1)),
                                   ([4, 20], [1, 99], [0.1, 0.9])):  # the ends are what Ray's sampler produces
        drawn = domain.sample(size=3000, random_state=0)
        assert min(drawn) >= low - 1e-9 and max(drawn) <= high + 1e-9


@pytest.mark.parametrize("per_model", [False, True])
def test_asha_per_model_ranks_a_trial_only_against_its_own_model(per_model):
    """Two CNNs at 0.9 after epoch 1, then a GRU at 0.6: plain ASHA stops the GRU (below the rung's top half);
    with rungs_per_model it is the first GRU at its rung and goes on."""
    from types import SimpleNamespace

    from imdb_ray.sweep.runner import build_scheduler
    from imdb_ray.sweep.schedulers import GroupedASHA

    sweep = Sweep(name="c", space={"model": {"cnn": {}, "gru": {}}, "epochs": 4}, rungs_per_model=per_model).validate()
    scheduler = build_scheduler(sweep)
    assert isinstance(scheduler, GroupedASHA) == per_model
    scheduler.set_search_properties("best_val_accuracy", "max")
    decisions = []
    for i, (model, score) in enumerate([("cnn", 0.9), ("cnn", 0.9), ("gru", 0.6)]):
        trial = SimpleNamespace(trial_id=f"t{i}", config={"model": model})
        scheduler.on_trial_add(None, trial)
        decisions.append(scheduler.on_trial_result(None, trial, {"epoch": 1, "best_val_accuracy": score}))
    assert decisions[:2] == ["CONTINUE", "CONTINUE"]
    assert decisions[2] == ("CONTINUE" if per_model else "STOP")


def test_asha_leaves_one_pass_models_out_of_its_rungs():
    """NB-SVM's one score (0.90 at "epoch 1") would rank every neural trial's first epoch below it: its trials
    run outside the rungs, so a CNN at 0.6 after epoch 1 is the first at its rung and goes on; a second CNN
    below it is still stopped (ASHA as usual among the neural trials)."""
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler

    from imdb_ray.sweep.runner import build_scheduler

    sweep = Sweep(name="c", space={"model": {"nbsvm": {}, "tfidf_lr": {}, "cnn": {}}, "epochs": 4}).validate()
    assert sorted(sweep.one_pass_models()) == ["nbsvm", "tfidf_lr"]
    scheduler = build_scheduler(sweep)
    scheduler.set_search_properties("best_val_accuracy", "max")
    decisions = []
    for i, (model, score) in enumerate([("nbsvm", 0.90), ("tfidf_lr", 0.88), ("cnn", 0.6), ("cnn", 0.5), ("cnn", 0.4)]):
        trial = SimpleNamespace(trial_id=f"t{i}", config={"model": model})
        scheduler.on_trial_add(None, trial)
        decisions.append(scheduler.on_trial_result(None, trial, {"epoch": 1, "best_val_accuracy": score}))
    assert decisions == ["CONTINUE", "CONTINUE", "CONTINUE", "STOP", "STOP"]
    plain = build_scheduler(Sweep(name="c", space={"model": {"cnn": {}, "gru": {}}, "epochs": 4}).validate())
    assert type(plain) is ASHAScheduler  # nothing to group: Ray's own scheduler, as the replay measured
