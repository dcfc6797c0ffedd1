"""The typed declarations (imdb_ray/contracts.py) and the metric table (imdb_ray/metrics.py): one source for
what is checked, what help shows, and which way a metric is better."""
from __future__ import annotations

from typing import Annotated, Literal

import pytest
from annotated_types import Ge, Gt, Le, Lt

from imdb_ray import contracts
from imdb_ray.config import TrialConfig, field_help, field_types
from imdb_ray.errors import UserError
from imdb_ray.metrics import METRICS, MetricName
from imdb_ray.models import get_model, list_models
from imdb_ray.sweep import Sweep


@pytest.mark.parametrize("hint, good, bad, words", [
    (contracts.Dropout, [0.0, 0.5, 0], [1.0, -0.1, True, "0.1", float("nan")], "a number in [0, 1)"),
    (contracts.Positive, [1, 10**9], [0, -1, 2.0, True, "3"], "an integer > 0"),
    (contracts.Positives, [(3, 4), [5]], [(), (0, 3), ["3"], (2.0,), "34"], "a list of integers > 0"),
    (Literal["a", "b"], ["a"], ["c", None, 1], "one of a, b"),
    (Annotated[int, Ge(4)] | None, [4, None], [3, 4.0], "an integer >= 4 or None"),
    (Annotated[float, Gt(0), Le(1)], [1.0, 1e-9], [0.0, 1.5, float("inf")], "a number in (0, 1]"),
    (Annotated[float, Lt(2)], [-5.0], [2.0], "a number < 2"),
])
def test_one_declaration_checks_and_describes(hint, good, bad, words):
    assert contracts.describe(hint) == words
    for value in good:
        contracts.check("x", value, hint)
    for value in bad:
        with pytest.raises(UserError, match=r"^x=.* must be " + words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            contracts.check("x", value, hint)


def test_every_setting_is_declared_and_documented():
    """Each TrialConfig field, model parameter and Sweep setting has an annotation that describe() can say, and
    each config field a help text: what `train --help` and `models` print."""
    for name, hint in field_types().items():
        assert contracts.describe(hint) and field_help()[name], name
    for entry in list_models():
        assert set(entry.types) == set(entry.params), (entry.name, set(entry.params) - set(entry.types))
        for key, default in entry.params.items():  # every default satisfies its own declaration
            contracts.check(key, default, entry.types[key])
    for name, hint in contracts.hints(Sweep).items():
        if name not in ("source", "space", "name"):
            assert contracts.describe(hint), name
    assert contracts.choices(field_types()["truncation"]) == ("head", "tail", "head+tail")
    assert contracts.choices(get_model("gru").types["pooling"]) == ("last", "mean", "max")


def test_help_shows_each_flags_meaning_and_allowed_values(capsys):
    from imdb_ray.__main__ import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--val-fraction VAL_FRACTION the share of the training rows held out for validation; a number in (0, 1); default 0.1" in text
    assert "--truncation TRUNCATION which part of a text longer than max_len is kept; one of head, tail, head+tail" in text
    main(["models"])
    listing = capsys.readouterr().out
    assert "--pooling                one of last, mean, max; default 'last'" in listing
    assert "--dropout                a number in [0, 1); default 0.5" in listing


def test_no_command_shows_the_commands_and_version_names_the_libraries(capsys):
    from importlib import metadata

    from imdb_ray.__main__ import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(f"\n    {command} " in out for command in ("train", "models", "sweep", "predict", "report", "ui")), out
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"imdb_ray {metadata.version('imdb_ray')} (torch {metadata.version('torch')}, ray "), line
    assert f"mlflow {metadata.version('mlflow')}" in line and "; Python 3." in line


def test_the_metric_table_decides_direction_everywhere():
    assert set(METRICS) == set(MetricName.__args__) == {"val_accuracy", "val_f1", "val_loss"}
    assert METRICS["val_loss"].mode == "min" and METRICS["val_accuracy"].mode == "max"
    assert METRICS["val_loss"].best_key == "best_val_loss"
    assert METRICS["val_loss"].better(0.2, 0.3) and not METRICS["val_accuracy"].better(0.2, 0.3)
    # a sweep takes its mode from the metric, and refuses one that contradicts it
    assert Sweep(name="x", space={"model": "gru"}, metric="val_loss").validate().mode == "min"
    with pytest.raises(UserError, match="mode='max' contradicts metric='val_loss'"):
        Sweep(name="x", space={"model": "gru"}, metric="val_loss", mode="max").validate()


def test_the_loop_keeps_the_lowest_loss_epoch_when_selecting_on_loss():
    import torch

    from imdb_ray.checkpoint import Progress

    cfg = TrialConfig(metric="val_loss", epochs=3)
    progress, model = Progress(), torch.nn.Linear(1, 1)
    for epoch, loss in enumerate([0.5, 0.3, 0.4], start=1):
        metrics = {"epoch": epoch, "val_loss": loss}
        progress.record(cfg, metrics, model)
    assert progress.best_epoch == 2 and metrics["best_val_loss"] == 0.3


def test_model_parameter_ranges_are_checked_with_the_config():
    for flat, message in [({"model": "cnn", "dropout": 1.5}, "dropout=1.5 must be a number in [0, 1)"),
                          ({"model": "transformer", "d_model": 10, "heads": 4}, "d_model=10 must be a multiple of heads=4"),
                          ({"model": "cnn_lstm", "kernel_size": 4}, "kernel_size=4 must be odd"),
                          ({"model": "tfidf_lr", "min_df": 2.0}, "min_df=2.0 must be an integer >= 1 or a number in (0, 1]"),
                          ({"model": "bert", "peft": "loraa"}, "peft='loraa' must be one of none, lora")]:
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            TrialConfig.from_flat(flat)


def test_the_parser_and_help_import_no_torch_ray_or_mlflow():
    """`python -m imdb_ray --help` and `--version` (and building the parser) stay fast: the heavy libraries load only when a
    command needs them. Checked in a fresh process, as a user starts it."""
    import subprocess
    import sys

    code = ("import sys, contextlib, io\nfrom imdb_ray.__main__ import build_parser\nbuild_parser()\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    build_parser().parse_args(['--help'])\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    build_parser().parse_args(['--version'])\n"
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'optuna', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_settings_page_is_written_from_the_declarations():
    """docs/settings.md is what `make docs` writes now: a changed range, choice, default or comment shows there."""
    from pathlib import Path

    from imdb_ray.cli.options import settings_markdown

    page = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
    assert page.read_text() == settings_markdown(), "docs/settings.md is out of step with the declarations: run `make docs`"
    assert "| `val_fraction` | the share of the training rows held out for validation | a number in (0, 1) | `0.1` |" in page.read_text()


def test_models_prints_the_registry_without_importing_torch():
    """`models` reads imdb_ray/models/catalog.txt (torch-free, fast); it must say what the registry says now."""
    import subprocess
    import sys

    from imdb_ray.cli.options import MODELS_CATALOG, models_catalog

    assert MODELS_CATALOG.read_text() == models_catalog(), "imdb_ray/models/catalog.txt is out of step with the registry: run `make docs`"
    code = ("import sys\nfrom imdb_ray.cli import main\ntry:\n    main(['models'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'transformers') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout == models_catalog() and out.stderr.strip().endswith("[]"), out.stderr
