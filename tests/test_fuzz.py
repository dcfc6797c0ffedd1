"""A fuzzer for what users type and write (hypothesis): generated sweep files, data files and command
lines, run through the real command line in this process.

Property, for every example: the command ends with exit 0, or with exit 2 and exactly one stderr line
`error: ...`; never a traceback; a refused input leaves an existing workspace (an earlier run, Ray
results, cache entries) byte for byte unchanged and starts no MLflow run.

The examples are derandomized (the "ci" profile, conftest.py), so a failure reproduces; to explore
others: `pytest tests/test_fuzz.py --hypothesis-profile explore --hypothesis-seed N`.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ROOT, cli, fresh_store, record_row, snapshot

pytestmark = pytest.mark.filterwarnings("ignore")
def fuzz(examples: int):
    """Examples per category; fixtures (capsys) are per test, reset per example by what the check reads."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tried() -> dict[str, list[int]]:
    """category -> [examples, exit 0, exit 2], for test_fuzz_record. Module-scoped, so `make test`'s
    scheduler keeps the module on one xdist worker (conftest.py) and the record sees every category."""
    return {}

EARLIER_WORK = {"runs/earlier/checkpoint/checkpoint.pt": b"weights", "runs/earlier/metrics.json": b"{}",
                "ray_results/earlier/result.json": b'{"epoch": 1}', "cache/words-abc.pt": b"tensors"}


@contextlib.contextmanager
def workspace(files: dict[str, bytes]):
    """A fresh folder with earlier work in it and the example's files."""
    ws = Path(tempfile.mkdtemp(prefix="imdb_ray_fuzz_"))
    try:
        for rel, data in {**EARLIER_WORK, **files}.items():
            (ws / rel).parent.mkdir(parents=True, exist_ok=True)
            (ws / rel).write_bytes(data)
        yield ws
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def check(category: str, ws: Path, argv: list[str], capsys, tried: dict[str, list[int]]) -> int:
    """Run argv; assert the property; return the exit code."""
    before, runs_before = snapshot(ws), stored_runs(ws)
    code, err, _ = cli(argv, capsys)
    assert code in (0, 2), (code, err)
    counts = tried.setdefault(category, [0, 0, 0])
    counts[0] += 1
    counts[1 if code == 0 else 2] += 1
    if code == 2:
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert snapshot(ws) == before, f"a refused input changed the workspace: {err[0]}"
        assert stored_runs(ws) == runs_before, f"a refused input left an MLflow run: {err[0]}"
    return code


def stored_runs(ws: Path) -> int:
    """Live runs in the MLflow stores a command may write: the workspace's, and the session's (`train`'s
    default here). A `train` refused before its first epoch deletes the run it opened."""
    stores = [ws / "mlflow.db", Path(os.environ["MLFLOW_TRACKING_URI"][len("sqlite:///"):])]
    query = "select count(*) from runs where lifecycle_stage = 'active'"
    return sum(sqlite3.connect(db).execute(query).fetchone()[0] for db in stores if db.exists())


# ------------------------------------------------------------------------------------- sweep files
SCALARS = st.one_of(st.integers(-3, 300), st.floats(width=32), st.text(max_size=6), st.booleans(), st.none())
KEYS = ["model", "lr", "hidden", "epochs", "batch_size", "max_len", "num_filters", "kernel_sizes", "clean_html", "n_train",
        "pooling", "peft", "lora_r", "dropout", "seed", "optimizer", "schedule", "rdrop_alpha", "bogus", "checkpoint"]
MODELS = ["gru", "cnn", "lstm", "tfidf_lr", "transformer", "nope"]
# Values each key takes, so that a good share of the files is valid and the fuzzer also walks the paths
# past validation; the rest are random types and shapes.
VALID = {"lr": st.floats(1e-5, 0.1), "hidden": st.integers(4, 64), "epochs": st.integers(1, 5), "batch_size": st.integers(1, 64),
         "max_len": st.integers(8, 256), "num_filters": st.integers(4, 64), "clean_html": st.booleans(),
         "kernel_sizes": st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple), "n_train": st.integers(40, 400),
         "pooling": st.sampled_from(["last", "mean", "max"]), "dropout": st.floats(0, 0.9), "seed": st.integers(0, 9),
         "optimizer": st.sampled_from(["adamw", "sgd"]), "schedule": st.sampled_from(["constant", "linear", "cosine"]),
         "rdrop_alpha": st.floats(0, 2)}


def _domain(draw, key: str) -> str:
    if key in VALID and draw(st.integers(0, 3)):  # three in four: a value of the right kind
        values = draw(st.lists(VALID[key], min_size=1, max_size=3))
        return repr(values[0]) if len(values) == 1 else f"tune.choice({values!r})"
    kind = draw(st.sampled_from(["scalar", "choice", "grid", "uniform", "loguniform", "randint", "tuple", "nested"]))
    if kind == "scalar":
        return repr(draw(SCALARS))
    if kind in ("choice", "grid"):
        values = draw(st.lists(st.one_of(SCALARS, st.sampled_from(MODELS)), max_size=3))
        return f"tune.{'choice' if kind == 'choice' else 'grid_search'}({values!r})"
    if kind in ("uniform", "loguniform"):
        a, b = sorted(draw(st.lists(st.floats(1e-6, 2.0), min_size=2, max_size=2)))
        return f"tune.{kind}({a!r}, {b!r})"
    if kind == "randint":
        a, b = sorted(draw(st.lists(st.integers(-2, 40), min_size=2, max_size=2)))
        return f"tune.randint({a}, {b + 1})"
    if kind == "tuple":
        return repr(tuple(draw(st.lists(SCALARS, max_size=3))))
    return repr({draw(st.sampled_from(MODELS)): {draw(st.sampled_from(KEYS)): draw(SCALARS)}})  # the conditional form


@st.composite
def sweep_files(draw) -> str:
    keys = draw(st.lists(st.sampled_from(KEYS) if draw(st.integers(0, 2)) == 0 else st.sampled_from(sorted(VALID)),
                         max_size=5, unique=True))
    space = {key: _domain(draw, key) for key in keys if key != "model"}
    if draw(st.integers(0, 3)):
        models = MODELS[:-1] if draw(st.integers(0, 3)) else MODELS
        space["model"] = repr(draw(st.sampled_from(models))) if draw(st.booleans()) else \
            f"tune.choice({draw(st.lists(st.sampled_from(models), min_size=1, max_size=3))!r})"
    setting_values = {"search": st.sampled_from(["optuna", "random", "grid", "bayes", 3]),
                      "scheduler": st.sampled_from(["asha", "fifo", "pbt", None]), "num_samples": SCALARS,
                      "metric": st.sampled_from(["val_accuracy", "val_loss", "test_accuracy", 1]), "mode": SCALARS,
                      "trainer": st.sampled_from(["direct", "ray_train", "horovod"]), "workers_per_trial": SCALARS,
                      "cpus_per_worker": SCALARS, "gpus_per_worker": SCALARS, "gpus_per_trial": SCALARS,
                      "test_top": SCALARS, "test_each": st.sampled_from(KEYS + [None]), "grace_period": SCALARS,
                      "time_budget_s": SCALARS, "max_failures": SCALARS, "max_concurrent": SCALARS, "seed": SCALARS}
    chosen = draw(st.lists(st.sampled_from(sorted(setting_values)), max_size=draw(st.sampled_from([0, 0, 1, 3])), unique=True))
    settings_text = "".join(f", {k}={draw(setting_values[k])!r}" for k in chosen)
    name = draw(st.sampled_from(["fuzz"] * 6 + ["fuzz-2.b", "", "a/b", "../up", 7]))
    body = ", ".join(f"{k!r}: {v}" for k, v in space.items())
    text = f"from ray import tune\nfrom imdb_ray.sweep import Sweep\nsweep = Sweep(name={name!r}, space={{{body}}}{settings_text})\n"
    if draw(st.integers(0, 9)) == 0:  # broken syntax: the file cut short
        text = text[:draw(st.integers(0, len(text) - 1))]
    return text


@fuzz(150)
@given(text=sweep_files())
def test_fuzz_sweep_files(text, capsys, tried):
    with workspace({"sweeps/fuzz.py": text.encode()}) as ws:
        check("sweep files", ws, ["sweep", str(ws / "sweeps/fuzz.py"), "--dry-run", "--no-estimate"], capsys, tried)


# Values outside a declared range or choice (imdb_ray/contracts.py), for model parameters, config fields and
# sweep settings: each must be refused (exit 2, one line naming the key), never become a failed trial.
OUT_OF_RANGE = {"dropout": st.one_of(st.floats(1.0, 10.0), st.floats(-10.0, -1e-6)), "hidden": st.integers(-50, 0),
                "num_filters": st.integers(-50, 0), "kernel_sizes": st.lists(st.integers(-3, 0), min_size=1, max_size=3).map(tuple),
                "pooling": st.text(max_size=6).filter(lambda t: t not in ("last", "mean", "max")), "lr": st.floats(-1.0, 0.0),
                "epochs": st.integers(-3, 0), "val_fraction": st.one_of(st.floats(1.0, 3.0), st.floats(-1.0, 0.0)),
                "warmup_ratio": st.floats(1.0, 2.0), "optimizer": st.sampled_from(["lion", "Adam", ""]), "n_train": st.integers(-5, 3)}
SETTING_OUT_OF_RANGE = {"reduction_factor": st.integers(-3, 1), "grace_period": st.integers(-3, 0), "num_samples": st.integers(-3, 0),
                        "confirm_seeds": st.integers(-3, 0), "ensemble_top": st.integers(-5, -1), "trainer": st.sampled_from(["horovod", ""]),
                        "cpus_per_worker": st.floats(-4.0, 0.0), "gpus_per_worker": st.floats(-4.0, -1e-3), "max_failures": st.integers(-5, -1)}


@st.composite
def violations(draw) -> tuple[str, str]:
    """A valid CNN/GRU sweep with exactly one value out of its range or choices: (file text, the key)."""
    model = draw(st.sampled_from(["cnn", "gru"]))
    keys = [k for k in OUT_OF_RANGE if k not in ({"hidden", "pooling"} if model == "cnn" else {"num_filters", "kernel_sizes"})]
    key = draw(st.sampled_from(keys + sorted(SETTING_OUT_OF_RANGE)))
    space, settings = {"model": repr(model), "n_train": "200", "epochs": "2"}, ""
    if key in OUT_OF_RANGE:
        bad = draw(OUT_OF_RANGE[key])
        how = draw(st.sampled_from(["constant", "choice", "branch"]))
        value = repr(bad) if how != "choice" else f"tune.choice([{draw(VALID[key]) if key in VALID else bad!r}, {bad!r}])"
        if how == "branch":  # under the model, beside a second model that is fine
            space["model"] = f"{{{model!r}: {{{key!r}: {value}}}, 'tfidf_lr': {{}}}}"
        else:
            space[key] = value
    else:
        settings = f", {key}={draw(SETTING_OUT_OF_RANGE[key])!r}"
    body = ", ".join(f"{k!r}: {v}" for k, v in space.items())
    return f"from ray import tune\nfrom imdb_ray.sweep import Sweep\nsweep = Sweep(name='fuzz', space={{{body}}}{settings})\n", key


@fuzz(60)
@given(example=violations())
def test_fuzz_range_and_choice_violations_are_refused(example, capsys, tried):
    text, key = example
    with workspace({"sweeps/fuzz.py": text.encode()}) as ws:
        code = check("range violations", ws, ["sweep", str(ws / "sweeps/fuzz.py"), "--dry-run", "--no-estimate"], capsys, tried)
        assert code == 2, f"{key} out of range was accepted:\n{text}"


# -------------------------------------------------------------------------------------- data files
TEXTS = st.one_of(st.text(max_size=40), st.sampled_from(["A fine film.", "Dull and long.", "", "   ", "\ufeffBOM first",
                                                         'say "hi", then go', "tab\there", "line\nbreak", "x" * 200_000]))
LABELS = st.one_of(st.sampled_from(["0", "1", "pos", "neg", "positive", "negative", "true", "2", "", "-1", "1.0"]),
                   st.integers(-1, 2), st.booleans())


@st.composite
def data_files(draw) -> tuple[str, dict[str, bytes]]:
    kind = draw(st.sampled_from(["csv", "tsv", "jsonl"]))
    good = [("A fine film with a great cast.", 1), ("A dull mess from start to end.", 0)] * 10
    files = {}
    valid_rows = st.tuples(st.sampled_from(["Great acting.", "Terrible plot!", "An odd, long film; fine.", "x" * 5000]),
                           st.sampled_from(["0", "1", "pos", "neg", "positive", "negative"]))
    for split in ("train", "test"):
        rows = good + draw(st.lists(valid_rows if draw(st.integers(0, 3)) else st.tuples(TEXTS, LABELS), max_size=6))
        if draw(st.integers(0, 3)) == 0:
            rows = draw(st.lists(st.tuples(TEXTS, LABELS), max_size=6))
        columns = draw(st.sampled_from([("text", "label")] * 8 + [("review", "label"), ("text",)]))
        if kind == "jsonl":
            text = "".join(json.dumps(dict(zip(columns, row))) + "\n" for row in rows)
        else:
            sep = "," if kind == "csv" else "\t"
            quote = lambda v: '"' + str(v).replace('"', '""') + '"'  # noqa: E731
            text = sep.join(columns) + "\n" + "".join(sep.join(quote(v) for v in row[:len(columns)]) + "\n" for row in rows)
        encoding = draw(st.sampled_from(["utf-8"] * 8 + ["utf-8-sig", "latin-1"]))
        files[f"{split}.{kind}"] = text.encode(encoding, errors="replace")
    return kind, files


@fuzz(60)
@given(example=data_files())
def test_fuzz_data_files(example, capsys, tried):
    kind, files = example
    with workspace(files) as ws:
        check("data files", ws, ["train", "--data", f"{ws}/train.{kind},{ws}/test.{kind}", "--model", "tfidf_lr", "--quiet",
                                 "--min-df", "1", "--run-dir", str(ws / "runs" / "new"), "--cache-dir", str(ws / "cache")], capsys, tried)


# ------------------------------------------------------------------------------------ command lines
TRAIN_FLAGS = ["--lr", "--epochs", "--batch-size", "--n-train", "--n-test", "--val-fraction", "--clean-html", "--seed",
               "--device", "--metric", "--optimizer", "--recipe", "--min-df", "--C", "--ngram-max", "--max-features", "--warmup-ratio",
               "--truncation", "--val-split", "--momentum", "--layer-decay", "--split-seed",
               "--hidden", "--bogus", "--text-column", "--max-len", "--embeddings", "--patience"]
VALUES = st.one_of(st.sampled_from(["0", "1", "-1", "2.5", "1e-3", "abc", "true", "none", "", "cuda", "cpu", "native",
                                    "val_loss", "nan", "inf", "99999999999"]), st.text(max_size=5))
GOOD_VALUES = {"--lr": "0.01", "--epochs": "2", "--batch-size": "8", "--n-train": "16", "--n-test": "8", "--val-fraction": "0.25",
               "--clean-html": "false", "--seed": "3", "--device": "cpu", "--metric": "val_f1", "--optimizer": "sgd",
               "--recipe": "tuned", "--min-df": "1", "--C": "0.5", "--ngram-max": "1", "--max-features": "50",
               "--max-len": "32", "--patience": "1", "--text-column": "text"}
GOOD = b"text,label\n" + b"A fine film with a great cast.,1\nA dull mess from start to end.,0\n" * 6


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(["train", "train", "sweep", "predict", "report", "models", "nope"]))
    if command == "train":  # a tiny, fast model, always on the tiny data: what varies is the flags
        argv = ["train", "--model", "tfidf_lr", "--data", "{ws}/train.csv,{ws}/test.csv", "--quiet",
                "--run-dir", "{ws}/runs/new", "--cache-dir", "{ws}/cache"]
        for flag in draw(st.lists(st.sampled_from(TRAIN_FLAGS), max_size=3, unique=True)):
            good = flag in GOOD_VALUES and draw(st.booleans())
            argv += [flag, GOOD_VALUES[flag] if good else draw(VALUES)]
        return argv
    if command == "sweep":
        argv = ["sweep", draw(st.sampled_from(["{ws}/sweeps/smoke.py", "{ws}/nope.py", "{ws}"])), "--dry-run", "--no-estimate"]
        for flag in draw(st.lists(st.sampled_from(["--num-samples", "--max-concurrent", "--time-budget", "--cpus-per-worker",
                                                   "--gpus-per-worker", "--address", "--storage"]), max_size=2, unique=True)):
            argv += [flag, draw(VALUES)]
        return argv
    if command == "predict":
        source = draw(st.sampled_from(["{ws}/runs/earlier", "{ws}/runs/nope", "sweep:nope", "0" * 32, "sweep:", "x"]))
        return ["predict", source, "--tracking-uri", "sqlite:///{ws}/mlflow.db", *draw(st.lists(VALUES, max_size=2))]
    if command == "report":
        return ["report", "--sweep", draw(VALUES), "--out", "{ws}/results", "--tracking-uri", "sqlite:///{ws}/mlflow.db"]
    return [command, *draw(st.lists(VALUES, max_size=2))]


@fuzz(120)
@given(argv=command_lines())
def test_fuzz_command_lines(argv, capsys, tried):
    files = {"train.csv": GOOD, "test.csv": GOOD, "sweeps/smoke.py": (ROOT / "sweeps" / "smoke.py").read_bytes()}
    with workspace(files) as ws:
        fresh_store(ws)  # the store predict and report read: an empty one (a missing one is refused at once, test_reliability)
        check("command lines", ws, [a.replace("{ws}", str(ws)) for a in argv], capsys, tried)


# What the fuzzer found while it was being built, each fixed in the code and now among its examples.
FOUND_AND_FIXED = [
    "a sweep setting of the wrong type (gpus_per_trial='') reached arithmetic: TypeError traceback",
    "nan or inf for a number (--cpus-per-worker inf): OverflowError traceback",
    "a user value with a line break (report --sweep '\\r') split the error into two lines",
    "a flag's own parser (--clean-html -1) raised outside the error handler: traceback",
    "scikit-learn refusing TF-IDF parameters (min_df=0) or data (no term left) at fit time: traceback",
    "`train` left an empty run folder behind when the model refused its parameters",
]


def test_fuzz_record(tried):
    """Last in the module: what the fuzzer tried, for results/reliability.md."""
    assert set(tried) == {"sweep files", "data files", "command lines", "range violations"}
    for category, (examples, ok, refused) in tried.items():
        assert examples > 0
        record_row("Fuzzer", f"generated {category}",
                   f"{examples} examples: {ok} ran (exit 0), {refused} refused with one `error:` line (exit 2); "
                   "no traceback, no change to the workspace on a refusal", "nothing")
    record_row("Fuzzer", "failures found and fixed while building it", "; ".join(FOUND_AND_FIXED), "-")
