"""Reliability: injected faults, a bad-input matrix, and safe defaults.

Every case records one row (helpers.record_row, a file per row, so the test workers of `make test`
can share them); when every case of the module passed in a run, the rows become results/reliability.md (what was tried, what happened, what was lost).
"""
from __future__ import annotations

import ast
import dataclasses
import contextlib
import errno
import importlib.util
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow.tracking import MlflowClient

from conftest import MINILM
from helpers import (ROOT, code_span, finish, free_port, fresh_store, http_server, kill_group, max_step, mlflow_server, record_row, snapshot, steps, sweep_command,
                     sweep_runs, wait_for, write_sweep)
from imdb_ray.__main__ import main


# ------------------------------------------------------------------------------ the bad-input matrix
MINILM_WITHOUT_WEIGHTS = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
GOOD_ROWS = "text,label\n" + "A fine film with a great cast.,1\nA dull mess from start to end.,0\n" * 4


def sweep_file(body: str, **settings) -> str:
    extra = "".join(f", {k}={v!r}" for k, v in settings.items())
    return f"from ray import tune\nfrom imdb_ray.sweep import Sweep\nsweep = Sweep(name='bad', space={body}{extra})\n"


SMALL = "{'model': 'gru', 'n_train': 40, 'n_test': 20, 'epochs': 1}"
# 4 domains of 10 rows each: a split by domain can only give a quarter of the rows to validation
GROUPED = "text,label,domain\n" + "".join(f"A fine film with a great cast {i}.,{i % 2},d{i // 10}\n" for i in range(40))
# (case, what to write into the workspace, argv, expected message fragment)
BAD_INPUTS = [
    ("sweep file missing", {}, ["sweep", "{ws}/sweeps/nope.py"], "sweep file not found"),
    ("sweep file syntax error", {"sweeps/bad.py": "sweep = Sweep(name='x', space={'model': 'gru',)\n"},
     ["sweep", "{ws}/sweeps/bad.py"], "syntax error"),
    ("sweep file without `sweep`", {"sweeps/bad.py": "x = 1\n"}, ["sweep", "{ws}/sweeps/bad.py"], "define `sweep = Sweep(...)`"),
    ("empty search space", {"sweeps/bad.py": sweep_file("{}")}, ["sweep", "{ws}/sweeps/bad.py"], "search space is empty"),
    ("unknown model", {"sweeps/bad.py": sweep_file("{'model': tune.choice(['gru', 'bert-huge'])}")},
     ["sweep", "{ws}/sweeps/bad.py"], "unknown model 'bert-huge'"),
    ("unknown parameter", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'kernel_sizes': (3,)}")},
     ["sweep", "{ws}/sweeps/bad.py"], "space['kernel_sizes']: no model"),
    ("parameter out of range", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'lr': tune.uniform(-1.0, 0.1)}")},
     ["sweep", "{ws}/sweeps/bad.py"], "lr=-1.0 must be a number > 0"),
    ("empty choice", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'lr': tune.choice([])}")},
     ["sweep", "{ws}/sweeps/bad.py"], "empty choice"),
    ("bad scheduler name", {"sweeps/bad.py": sweep_file(SMALL, scheduler="hyperband2")},
     ["sweep", "{ws}/sweeps/bad.py"], "scheduler='hyperband2' must be one of asha, fifo"),
    ("bad search name", {"sweeps/bad.py": sweep_file(SMALL, search="bayes")},
     ["sweep", "{ws}/sweeps/bad.py"], "search='bayes' must be one of optuna, random, grid"),
    ("resources no local cluster can give", {"sweeps/bad.py": sweep_file(SMALL, gpus_per_worker=64)},
     ["sweep", "{ws}/sweeps/bad.py"], "one trial needs"),
    ("CLI: unknown flag", {}, ["sweep", "sweeps/smoke.py", "--bogus"], "unrecognized arguments: --bogus"),
    ("CLI: bad --address", {}, ["sweep", "sweeps/smoke.py", "--address", "nowhere"], "--address 'nowhere'"),
    ("CLI: --address where nothing answers", {}, ["sweep", "sweeps/smoke.py", "--address", "127.0.0.1:9"],
     "--address 127.0.0.1:9: nothing answers at 127.0.0.1:9"),
    ("CLI: --address where another service answers (a web server, as the dashboard's port would; Ray's client retried "
     "it for minutes)", {"WEB_SERVER": True}, ["sweep", "sweeps/smoke.py", "--address", "{web}"],
     "answers, but not as a Ray head (no gRPC there)"),
    ("CLI: --address auto with no cluster running", {"NO_CLUSTER": True}, ["sweep", "sweeps/smoke.py", "--address", "auto"],
     "--address auto: no running Ray cluster found"),
    ("CLI: relative --storage", {}, ["sweep", "sweeps/smoke.py", "--storage", "relative/dir"], "must be absolute"),
    ("CLI: malformed --time-budget", {}, ["sweep", "sweeps/smoke.py", "--time-budget", "2x"],
     "--time-budget '2x': give seconds, or a number with s, m or h"),
    ("CLI: --resume with nothing to resume", {}, ["sweep", "sweeps/smoke.py", "--resume"],
     "--resume: no interrupted sweep 'smoke'"),
    ("CLI: --dry-run with an MLflow server where nothing answers (the sweep would refuse it)", {},
     ["sweep", "sweeps/smoke.py", "--dry-run", "--no-estimate", "--tracking-uri", "http://127.0.0.1:9"],
     "MLflow tracking store http://127.0.0.1:9 is not reachable"),
    ("CLI: --dry-run with an --address where nothing answers", {},
     ["sweep", "sweeps/smoke.py", "--dry-run", "--no-estimate", "--address", "127.0.0.1:9"], "nothing answers at 127.0.0.1:9"),
    ("CLI: --dry-run --resume with nothing to resume", {}, ["sweep", "sweeps/smoke.py", "--dry-run", "--no-estimate", "--resume"],
     "--resume: no interrupted sweep 'smoke'"),
    ("MLflow tracking server unreachable at start", {},
     ["sweep", "sweeps/smoke.py", "--tracking-uri", "http://127.0.0.1:9"], "MLflow tracking store http://127.0.0.1:9 is not reachable"),
    ("an MLflow store URI of no scheme MLflow has", {}, ["train", "--model", "tfidf_lr", "--tracking-uri", "sqllite:///m.db"],
     "sqllite:///m.db: MLflow has no store for this scheme"),
    ("ui: a store it cannot open", {}, ["ui", "--tracking-uri", "sqllite:///m.db", "--port", "1"], "MLflow has no store for this scheme"),
    ("ui: a sqlite store file that is not there (MLflow would create it and show it empty)", {},
     ["ui", "--tracking-uri", "sqlite:///{ws}/mlfow.db", "--port", "1"], "no MLflow store at sqlite:///{ws}/mlfow.db (no such file)"),
    ("data: missing file", {"test.csv": GOOD_ROWS}, ["train", "--data", "{ws}/nope.csv,{ws}/test.csv"], "nope.csv: data file not found"),
    ("cache folder cannot be made (a file is in its way)", {"blocker": "not a folder"},
     ["train", "--model", "tfidf_lr", "--n-train", "200", "--n-test", "100", "--cache-dir", "{ws}/blocker/cache"],
     "blocker/cache: cannot create it (Not a directory); give --cache-dir a writable folder"),
    ("an output folder a file is in the way of: train --run-dir", {"blocker": "not a folder"},
     ["train", "--model", "tfidf_lr", "--run-dir", "{ws}/blocker/run"], "blocker/run: cannot create it (Not a directory); give --run-dir"),
    ("an output folder a file is in the way of: sweep --storage", {"blocker": "not a folder"}, ["sweep", "sweeps/smoke.py", "--storage", "{ws}/blocker/ray"],
     "blocker/ray: cannot create it (Not a directory); give --storage a writable folder"),
    ("an output folder a file is in the way of: report --out", {"blocker": "not a folder"}, ["report", "--out", "{ws}/blocker/reports"],
     "blocker/reports: cannot create it (Not a directory); give --out a writable folder"),
    ("predict: a file named where texts go (it was scored as the one word 'reviews.csv')", {"reviews.csv": GOOD_ROWS},
     ["predict", "{ws}/runs/earlier", "{ws}/reviews.csv"], "reviews.csv' is a file here: give a file with --file"),
    ("an output folder a file is in the way of: predict --out", {"blocker": "not a folder"}, ["predict", "{ws}/runs/earlier", "great film", "--out", "{ws}/blocker/p.csv"],
     "blocker: cannot create it (Not a directory); give --out a file in a writable folder"),
    ("data: missing column", {"train.csv": GOOD_ROWS.replace("text,label", "review,label"), "test.csv": GOOD_ROWS},
     ["train", "--data", "{ws}/train.csv,{ws}/test.csv"], "missing column 'text' (columns: review, label)"),
    ("data: non-binary label", {"train.csv": GOOD_ROWS + "Odd.,3\n", "test.csv": GOOD_ROWS},
     ["train", "--data", "{ws}/train.csv,{ws}/test.csv"], "train.csv: row 9: label '3' is not 0/1"),
    ("data: empty text", {"train.csv": GOOD_ROWS + '"  ",1\n', "test.csv": GOOD_ROWS},
     ["train", "--data", "{ws}/train.csv,{ws}/test.csv"], "train.csv: row 9: empty text"),
    ("data: every text holds an unquoted comma (pandas read each row's first field as an index, the rest as the text)",
     {"train.csv": "text,label\n" + "Great film, loved it,1\nDull, long,0\n" * 4, "test.csv": GOOD_ROWS},
     ["train", "--data", "{ws}/train.csv,{ws}/test.csv"],
     "train.csv: line 2 has one field more than the header (text, label); put each text that holds ',' in double quotes"),
    ("data: one class only", {"train.csv": "text,label\n" + "Great.,1\n" * 8, "test.csv": GOOD_ROWS},
     ["train", "--data", "{ws}/train.csv,{ws}/test.csv"], "every row has label 1; a split needs both classes"),
    ("data: a JSON-lines row that is not JSON (pandas named a byte position)",
     {"train.jsonl": '{"text": "A fine film.", "label": 1}\n{"text": "Dull.", "label": 0\n', "test.jsonl": '{"text": "Fine.", "label": 1}\n'},
     ["train", "--data", "{ws}/train.jsonl,{ws}/test.jsonl"], "train.jsonl: line 2 is not valid JSON (Expecting ',' delimiter, column 29); fix that line"),
    ("data: wrong encoding", {"train.csv": GOOD_ROWS.encode() + "Caf\xe9 au lait.,1\n".encode("latin-1"), "test.csv": GOOD_ROWS},
     ["train", "--data", "{ws}/train.csv,{ws}/test.csv"], "train.csv: line 10 is not valid UTF-8"),
    ("train --resume with other model settings than the run's", {"runs/earlier/config.json": '{"model": "gru", "model_args": {"hidden": 16}}'},
     ["train", "--model", "gru", "--run-dir", "{ws}/runs/earlier", "--resume"],
     "runs/earlier was trained with hidden=16 (this command: 128); a resumed run keeps its model, data and optimisation"),
    ("vectors file: a row shorter than the others (gensim broadcast it silently)", {"vec.txt": "the 0.1 0.2\ngood 0.3\n"},
     ["train", "--model", "gru", "--embeddings", "{ws}/vec.txt"], "vec.txt: line 2 has 1 value(s) after its word, the file's vectors 2"),
    ("vectors file: a file of another kind", {"vec.txt": GOOD_ROWS}, ["train", "--model", "gru", "--embeddings", "{ws}/vec.txt"],
     "vec.txt: line 1 is not a word followed by numbers"),
    ("unknown model (train)", {}, ["train", "--model", "bert-huge"], "unknown model 'bert-huge'"),
    ("unknown model parameter (train)", {}, ["train", "--model", "cnn", "--hidden", "8"], "unknown option --hidden"),
    ("PEFT method the architecture cannot take", {}, ["train", "--model", "distilbert", "--peft", "prefix_tuning"],
     "peft='prefix_tuning' does not work with distilbert-base-uncased"),
    ("int8 without bitsandbytes", {"HIDE": "bitsandbytes"},
     ["train", "--model", "distilbert", "--peft", "lora", "--quantization", "int8"], "quantization='int8' needs bitsandbytes"),
    ("HF checkpoint: no such folder", {}, ["train", "--model", "hf", "--checkpoint", "{ws}/models/nope"],
     "checkpoint '{ws}/models/nope': no such folder, and not a Hugging Face hub name"),
    ("HF checkpoint: a folder with no model in it", {"models/empty/README.md": "notes"},
     ["train", "--model", "hf", "--checkpoint", "{ws}/models/empty"], "models/empty': the folder has no config.json"),
    ("HF checkpoint: a model folder without its tokenizer", {"models/bare/config.json": '{"model_type": "bert"}',
                                                            "train.csv": GOOD_ROWS, "test.csv": GOOD_ROWS},
     ["train", "--model", "hf", "--checkpoint", "{ws}/models/bare", "--data", "{ws}/train.csv,{ws}/test.csv"],
     "models/bare' has no tokenizer"),
    ("HF checkpoint: a DeBERTa folder without its tokenizer (transformers built one that reads every word as unknown, "
     "and the run trained on nothing)", {"models/bare/config.json": '{"model_type": "deberta-v2"}', "train.csv": GOOD_ROWS, "test.csv": GOOD_ROWS},
     ["train", "--model", "hf", "--checkpoint", "{ws}/models/bare", "--data", "{ws}/train.csv,{ws}/test.csv"],
     "models/bare' has no tokenizer (it reads every word of"),
    ("HF checkpoint: a ModernBERT folder without its tokenizer (a traceback)", {"models/bare/config.json": '{"model_type": "modernbert"}',
                                                                               "train.csv": GOOD_ROWS, "test.csv": GOOD_ROWS},
     ["train", "--model", "hf", "--checkpoint", "{ws}/models/bare", "--data", "{ws}/train.csv,{ws}/test.csv"],
     "models/bare' has no tokenizer transformers can load"),
    ("HF checkpoint: a config.json that names no architecture (a traceback)", {"models/odd/config.json": "{}"},
     ["train", "--model", "hf", "--checkpoint", "{ws}/models/odd"], "models/odd/config.json names no model_type"),
    ("HF checkpoint: an architecture transformers does not know (a traceback)", {"models/odd/config.json": '{"model_type": "bert-huge"}'},
     ["train", "--model", "hf", "--checkpoint", "{ws}/models/odd"], "model_type 'bert-huge' is no architecture transformers"),
    ("sweep file: an HF checkpoint without its tokenizer", {"models/bare/config.json": '{"model_type": "bert"}',
                                                          "sweeps/bad.py": sweep_file("{'model': 'hf', 'checkpoint': 'models/bare'}")},
     ["sweep", "{ws}/sweeps/bad.py"], "checkpoint '{ws}/models/bare' has no tokenizer"),
    ("HF checkpoint: a hub name not in the cache while the hub is off", {"HF_HUB_OFFLINE": True},
     ["train", "--model", "hf", "--checkpoint", "imdb-ray-tests/never-downloaded"],
     "'imdb-ray-tests/never-downloaded' is not in the Hugging Face cache and HF_HUB_OFFLINE is set"),
    ("HF checkpoint: a hub name not on this machine while nothing answers at the hub's address", {"HF_ENDPOINT": "http://127.0.0.1:9"},
     ["train", "--model", "hf", "--checkpoint", "imdb-ray-tests/never-downloaded"],
     "'imdb-ray-tests/never-downloaded' is not on this machine and the Hugging Face hub (http://127.0.0.1:9) cannot be reached"),
    ("HF checkpoint: max_len past its table of positions (it failed mid-run, in the embeddings)",
     {f"models/minilm/{name}": (MINILM / name).read_bytes() for name in MINILM_WITHOUT_WEIGHTS},
     ["train", "--model", "hf", "--checkpoint", "{ws}/models/minilm", "--max-len", "1000"],
     "max_len=1000 is more than {ws}/models/minilm takes (512 positions, special tokens included); use max_len <= 512"),
    ("sweep --storage: a scheme Tune's filesystem layer (pyarrow) does not know", {},
     ["sweep", "{ws}/sweeps/smoke.py", "--storage", "foo://bucket/x"], "--storage foo://bucket/x: Unrecognized filesystem type"),
    ("sweep --storage: an S3 endpoint where nothing answers (it failed after Ray's start, a traceback)", {},
     ["sweep", "{ws}/sweeps/smoke.py", "--storage", "s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=http"],
     "--storage s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=http: When getting information for key 'x' in bucket 'bucket'"),
    ("unsloth without a GPU", {}, ["train", "--model", "distilbert", "--peft", "lora", "--engine", "unsloth"],
     "engine='unsloth' needs an NVIDIA GPU"),
    ("sweep file: a string where a number goes", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'lr': '1e-3'}")},
     ["sweep", "{ws}/sweeps/bad.py"], "space['lr'] value '1e-3': lr='1e-3' must be a number > 0"),
    ("sweep file: a wrong type inside a choice", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'hidden': tune.choice(['big', 64])}")},
     ["sweep", "{ws}/sweeps/bad.py"], "hidden='big' must be an integer > 0"),
    ("sweep file: a fraction of an epoch", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'epochs': 2.5}")},
     ["sweep", "{ws}/sweeps/bad.py"], "epochs=2.5 must be an integer > 0"),
    ("sweep file: a word for a boolean", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'clean_html': 'no'}")},
     ["sweep", "{ws}/sweeps/bad.py"], "clean_html='no' must be true or false"),
    ("sweep file: a setting of the wrong type", {"sweeps/bad.py": sweep_file(SMALL, num_samples="8")},
     ["sweep", "{ws}/sweeps/bad.py"], "num_samples='8' must be an integer > 0"),
    ("sweep file: a credential in the space", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'data': 'hf_" + "a" * 34 + "'}")},
     ["sweep", "{ws}/sweeps/bad.py"], "space['data'] holds what looks like a credential"),
    ("train: a word for an integer model parameter", {}, ["train", "--model", "gru", "--hidden", "abc"],
     "hidden='abc' must be an integer > 0"),
    ("predict: model path that does not exist", {}, ["predict", "{ws}/runs/nope", "great film"],
     "no such folder, and not an MLflow run id, sweep:NAME or models:/ URI"),
    ("predict: folder that holds no model", {}, ["predict", "{ws}/runs/earlier", "great film"], "not a model folder"),
    ("predict: a `train` run stopped before its end", {"runs/stopped/checkpoint/checkpoint.pt": b"weights",
                                                      "runs/stopped/history.jsonl": '{"epoch": 1}\n'},
     ["predict", "{ws}/runs/stopped", "great film"], "this `train` run has no model yet (it stopped before its end); finish it"),
    ("predict: a folder given as --file", {"texts/a.txt": "great film\n"}, ["predict", "{ws}/runs/earlier", "--file", "{ws}/texts"],
     "--file {ws}/texts: a folder, not a file"),
    # commands that only read a store: a sqlite path that is not there is a typo, not a new store
    ("report: a sqlite store that does not exist", {}, ["report", "--tracking-uri", "sqlite:///{ws}/typo.db"],
     "no MLflow store at sqlite:///"),
    ("predict: sweep:NAME from a sqlite store that does not exist", {},
     ["predict", "sweep:smoke", "great film", "--tracking-uri", "sqlite:///{ws}/typo.db"], "typo.db (no such file)"),
    ("MLflow store in a folder that does not exist", {}, ["sweep", "{ws}/sweeps/smoke.py", "--tracking-uri", "sqlite:///{ws}/nope/m.db"],
     "cannot create m.db in"),
    ("sweep --test-only: a sqlite store that does not exist", {},
     ["sweep", "{ws}/sweeps/smoke.py", "--test-only", "--tracking-uri", "sqlite:///{ws}/typo.db"], "typo.db (no such file)"),
    # ranges and choices: refused before a run folder, an MLflow run, a cache entry or Ray exists
    ("train: a model parameter out of its range", {}, ["train", "--model", "cnn", "--dropout", "1.5"],
     "dropout=1.5 must be a number in [0, 1)"),
    ("train: a list with a value out of range", {}, ["train", "--model", "cnn", "--kernel-sizes", "0,3"],
     "kernel_sizes=(0, 3) must be a list of integers > 0"),
    ("train: --device cuda without a GPU", {}, ["train", "--model", "cnn", "--device", "cuda"], "device='cuda' but no CUDA GPU"),
    ("train: a choice that is not one", {}, ["train", "--model", "gru", "--pooling", "maxx"], "pooling='maxx' must be one of last, mean, max"),
    ("sweep file: a value out of range inside one model's branch",
     {"sweeps/bad.py": sweep_file("{'model': {'cnn': {}, 'gru': {'hidden': tune.choice([64, -8])}}}")},
     ["sweep", "{ws}/sweeps/bad.py"], "space['model']['gru']['hidden'] value -8 (gru): hidden=-8 must be an integer > 0"),
    ("sweep file: dropout out of range", {"sweeps/bad.py": sweep_file("{'model': 'cnn', 'dropout': 1.5}")},
     ["sweep", "{ws}/sweeps/bad.py", "--dry-run"], "dropout=1.5 must be a number in [0, 1)"),
    ("sweep file: reversed bounds", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'lr': tune.loguniform(1e-2, 1e-4)}")},
     ["sweep", "{ws}/sweeps/bad.py"], "tune.loguniform(0.01, 0.0001) has its lower bound above its upper"),
    ("sweep file: tune.sample_from", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'lr': tune.sample_from(lambda c: 0.01)}")},
     ["sweep", "{ws}/sweeps/bad.py"], "space['lr']: tune.sample_from cannot be checked"),
    ("sweep file: tune.randn on a positive parameter", {"sweeps/bad.py": sweep_file("{'model': 'gru', 'lr': tune.randn(0.01, 0.001)}")},
     ["sweep", "{ws}/sweeps/bad.py"], "space['lr']: tune.randn draws unbounded values"),
    ("sweep file: a mode that contradicts the metric", {"sweeps/bad.py": sweep_file(SMALL, metric="val_loss", mode="max")},
     ["sweep", "{ws}/sweeps/bad.py"], "mode='max' contradicts metric='val_loss'"),
    ("data: a group column that names no column", {"train.csv": GROUPED, "test.csv": GROUPED},
     ["train", "--model", "tfidf_lr", "--data", "{ws}/train.csv,{ws}/test.csv", "--group-column", "domian"],
     "group_column='domian' names no column of"),
    ("data: a column named twice", {"train.csv": GOOD_ROWS.replace("text,label", "text,text,label").replace(",1\n", ",x,1\n")
                                    .replace(",0\n", ",x,0\n"), "test.csv": GOOD_ROWS},
     ["train", "--data", "{ws}/train.csv,{ws}/test.csv"], "column 'text' appears more than once"),
    ("data: train and test with different columns", {"train.csv": GROUPED, "test.csv": GOOD_ROWS},
     ["train", "--data", "{ws}/train.csv,{ws}/test.csv", "--val-split", "random"], "the train and test files have different columns"),
    ("data: groups too coarse for the validation fraction", {"train.csv": GROUPED, "test.csv": GROUPED},
     ["train", "--model", "tfidf_lr", "--data", "{ws}/train.csv,{ws}/test.csv", "--group-column", "domain", "--val-fraction", "0.1"],
     "give a validation share of 0.250"),
]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Earlier work that a bad command must leave untouched: a run, Ray results, cache entries."""
    ws = tmp_path / "ws"
    for rel, data in {"runs/earlier/checkpoint/checkpoint.pt": b"weights", "runs/earlier/metrics.json": b"{}",
                      "ray_results/earlier/result.json": b'{"epoch": 1}', ".cache/imdb_ray/words-abc.pt": b"tensors",
                      "sweeps/smoke.py": (ROOT / "sweeps" / "smoke.py").read_bytes()}.items():
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_bytes(data)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ws}/mlflow.db")
    return ws


@pytest.mark.parametrize("case, files, argv, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input(workspace, capsys, monkeypatch, request, case, files, argv, message):
    web = ""
    for rel, data in files.items():
        if rel == "WEB_SERVER":  # a plain HTTP server on a free port, for as long as the test runs
            running = contextlib.ExitStack()
            request.addfinalizer(running.close)
            web = running.enter_context(http_server())
            continue
        if rel == "HIDE":  # pretend a package is not installed
            real = importlib.util.find_spec
            monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == data else real(name, *a))
            continue
        if rel == "NO_CLUSTER":  # what Ray finds for `auto` on a machine with no Ray running (the suite runs some)
            monkeypatch.setattr("imdb_ray.sweep.cluster.cluster_address", lambda address: None)
            continue
        if rel == "HF_HUB_OFFLINE":  # what the variable sets when huggingface_hub is imported
            monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", data)
            continue
        if rel == "HF_ENDPOINT":  # likewise (a mirror's address, or here a port where nothing listens)
            monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", data)
            monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE", data + "/{repo_id}/resolve/{revision}/{filename}")
            continue
        (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
        (workspace / rel).write_bytes(data if isinstance(data, bytes) else data.encode())
    before = snapshot(workspace)
    argv = [a.format(ws=workspace, web=web) for a in argv]
    if argv[0] == "sweep" and "--storage" not in argv:
        argv += ["--storage", str(workspace / "ray_results"), "--cache-dir", str(workspace / ".cache/imdb_ray")]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors exit from inside the parser
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and message.format(ws=workspace) in err[0], err
    assert snapshot(workspace) == before, "a bad input changed or created files"
    assert not (workspace / "mlflow.db").exists(), "a refused command created the MLflow store"  # (snapshot leaves it out)
    shown = err[0].replace(str(workspace), "<workspace>")  # the same text in every run of the record
    shown = shown.replace(web, "<web server>") if web else shown
    record_row("Bad input", case, f"exit 2: {code_span(shown)}", "nothing (no file created or changed, no run started)")


def test_a_baseline_that_refuses_its_data_leaves_no_run(workspace, capsys):
    """20 rows whose words each appear once: TF-IDF (min_df 2) keeps no term, which only its fit can tell. The
    refusal is one line, and no run folder or MLflow run (not even a deleted one) is left: a baseline's run
    starts when its one fit has succeeded."""
    rows = "text,label\n" + "".join(f"word{i}a word{i}b,{i % 2}\n" for i in range(20))
    for name in ("train.csv", "test.csv"):
        (workspace / name).write_text(rows)
    code = main(["train", "--model", "tfidf_lr", "--data", f"{workspace}/train.csv,{workspace}/test.csv", "--quiet",
                 "--run-dir", str(workspace / "runs" / "new")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no terms remain" in err[0], err
    assert not (workspace / "runs" / "new").exists() and not (workspace / "mlflow.db").exists()


TINY_TRAIN = ["train", "--model", "cnn", "--n-train", "240", "--n-test", "100", "--max-len", "64", "--embed-dim", "16",
              "--w2v-epochs", "1", "--epochs", "3", "--num-filters", "8", "--quiet"]


def stop_after_first_epoch(monkeypatch, stop) -> None:
    """`train`'s loop calls stop() right after its first epoch's checkpoint is kept."""
    import imdb_ray.train

    real = imdb_ray.train.train

    def train(cfg, *, on_epoch, **kw):
        def epoch_then_stop(metrics, ckpt):
            on_epoch(metrics, ckpt)
            if metrics["epoch"] == 1:
                stop()
        return real(cfg, on_epoch=epoch_then_stop, **kw)

    monkeypatch.setattr(imdb_ray.train, "train", train)


def test_a_stopped_train_is_marked_killed_and_resumes_from_the_command_it_prints(tmp_path, capsys, monkeypatch):
    """SIGTERM (what `kill`, `timeout` and job schedulers send) after the first of 3 epochs: the MLflow run ends
    KILLED, not RUNNING forever, exit 143, and the line printed is the command that finishes the run from that
    epoch's checkpoint. A crash instead ends the run FAILED."""
    import shlex

    monkeypatch.chdir(tmp_path)
    uri = fresh_store(tmp_path)
    argv = [*TINY_TRAIN, "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", uri, "--run-dir", "runs/stopped"]
    # SIGINT's handler as in a fresh `python -m imdb_ray`: Tune leaves its own installed after an in-process sweep
    # (an earlier test in this worker), and SIGTERM does what SIGINT's handler does
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    with monkeypatch.context() as patched:
        stop_after_first_epoch(patched, lambda: os.kill(os.getpid(), signal.SIGTERM))  # a real signal, handled in main
        try:
            code = main(argv)
        finally:
            signal.signal(signal.SIGINT, sigint)
    err = capsys.readouterr().err.strip().splitlines()
    client, run_id = MlflowClient(uri), (tmp_path / "runs" / "stopped" / "mlflow_run_id").read_text().strip()
    assert code == 143 and err[-1] == "terminated" and client.get_run(run_id).info.status == "KILLED", err
    assert err[-2].startswith("stopped after epoch 1;") and "Continue with: python -m imdb_ray train " in err[-2], err
    resume = shlex.split(err[-2].split("Continue with: ")[1])[3:]
    assert resume[-3:] == ["--run-dir", str(tmp_path / "runs" / "stopped"), "--resume"]
    assert main(resume) == 0
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1, 2, 3]

    def crash():
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with monkeypatch.context() as patched, pytest.raises(RuntimeError):
        stop_after_first_epoch(patched, crash)
        main([*argv[:-1], "runs/crashed"])
    assert client.get_run((tmp_path / "runs" / "crashed" / "mlflow_run_id").read_text().strip()).info.status == "FAILED"
    capsys.readouterr()

    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "runs" / "full" / "checkpoint.tmp"))

    with monkeypatch.context() as patched:
        stop_after_first_epoch(patched, disk_full)
        code = main([*argv[:-1], "runs/full"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1] == f"error: No space left on device: {tmp_path}/runs/full/checkpoint.tmp; free some space " \
                                    "(what was written before is kept)" and err[-2].startswith("stopped after epoch 1;"), err
    assert client.get_run((tmp_path / "runs" / "full" / "mlflow_run_id").read_text().strip()).info.status == "FAILED"
    code = main([*argv[:-1], "runs/diverged", "--optimizer", "sgd", "--lr", "1e6", "--grad-clip", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and re.fullmatch(r"error: loss became (nan|-?inf) at epoch 1; lower lr \(now 1000000.0\)", err[0]), err
    assert client.get_run((tmp_path / "runs" / "diverged" / "mlflow_run_id").read_text().strip()).info.status == "FAILED"
    record_row("Fault", "`train` stopped by SIGTERM after epoch 1 of 3; others crashing or finding the disk full (ENOSPC, "
                        "raised by hand) after epoch 1, or diverging (lr 1e6)",
               "exit 143; the MLflow run KILLED (the others FAILED; the full disk and the divergence one line, exit 1, the full "
               "disk with the resume command too), never left RUNNING; the command it printed resumed the run from epoch 1's checkpoint to FINISHED, MLflow steps [1, 2, 3]", "the stopped part of epoch 2")


def test_a_run_that_does_not_fit_in_memory_is_one_line(tmp_path, capsys, monkeypatch):
    """The CPU allocator's refusal (a real one: a GRU of hidden 10^6 wants 11,176 GiB) and CUDA's OutOfMemoryError
    (raised here: no GPU) end `train` with one line, exit 1, the MLflow run FAILED."""
    import torch

    import imdb_ray.cli.models

    monkeypatch.chdir(tmp_path)
    uri = fresh_store(tmp_path)
    code = main(["train", "--model", "gru", "--hidden", "1000000", "--n-train", "240", "--n-test", "100", "--max-len", "64",
                 "--embed-dim", "16", "--w2v-epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", uri,
                 "--run-dir", "runs/big", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1] == "error: model 'gru' with {'hidden': 1000000} does not fit in memory (asked for 11,176 GiB); make it smaller", err
    assert MlflowClient(uri).get_run((tmp_path / "runs" / "big" / "mlflow_run_id").read_text().strip()).info.status == "FAILED"
    for source in ("word2vec", "random"):  # the word vectors' own allocation, named by the setting that sized it
        code = main(["train", "--model", "gru", "--embed-dim", "100000000", "--embeddings", source, "--n-train", "240",
                     "--n-test", "100", "--max-len", "64", "--w2v-epochs", "1", "--cache-dir", str(tmp_path / "cache"),
                     "--tracking-uri", uri, "--run-dir", f"runs/wide-{source}", "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and re.fullmatch(r"error: word vectors of [\d,]+ words x embed_dim=100000000 do not fit in memory "
                                          r"\(asked for [\d.]+ [GT]iB\); lower embed_dim", err[-1]), err

    def out_of_gpu_memory(args, extra):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.8 GiB "
                                     "of which 1.1 GiB is free. If reserved but unallocated memory is large try setting ...")

    monkeypatch.setattr(imdb_ray.cli.models, "run", out_of_gpu_memory)
    assert main(["models"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 139.8 GiB of which 1.1 GiB "
        "is free.; lower --batch-size or --max-len"]
    record_row("Fault", "`train` of a model that does not fit in memory (CPU: a real allocator refusal; CUDA's "
                        "OutOfMemoryError raised by hand)", "one line naming the size and what to lower, exit 1; the MLflow run FAILED",
               "nothing (no epoch had started)")


def test_sigterm_does_what_ctrl_c_would_do_at_that_moment(monkeypatch):
    from imdb_ray.interrupts import sigterm_as_interrupt, terminated

    seen, before = [], signal.getsignal(signal.SIGTERM)
    for sigint in (lambda signum, frame: seen.append(signum), signal.default_int_handler, signal.SIG_IGN):
        monkeypatch.setattr(signal, "getsignal", lambda s, h=sigint, real=signal.getsignal: h if s == signal.SIGINT else real(s))
        with sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here; a KeyboardInterrupt ends the wait
            seen.append("slept")
        assert terminated()
    assert seen == [signal.SIGINT, "slept"]  # a handler of SIGINT's (Tune's) is called; otherwise KeyboardInterrupt
    assert signal.getsignal(signal.SIGTERM) == before  # put back when the command ends


def test_a_closed_terminal_stops_a_command_as_sigterm_does_unless_nohup_ignores_it():
    """SIGHUP (the terminal closed, an SSH session dropped) ended the process on the spot, Python's default: its MLflow
    runs stayed RUNNING. Now it is a stop like SIGTERM's (exit code 129). Under `nohup` SIGHUP is ignored when the
    command starts, and stays ignored: the sweep outlives the terminal, as nohup was asked to make it."""
    from imdb_ray.interrupts import sigterm_as_interrupt, stop_exit_code, terminated

    # as a shell starts a command: a test worker may ignore SIGHUP, and a Ray started in it replaces the SIGINT handler
    before = signal.signal(signal.SIGHUP, signal.SIG_DFL), signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)
        assert terminated() and stop_exit_code() == 129 and signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
        with sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert terminated() and stop_exit_code() == 143
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts the command
        with sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.2)  # ignored: nothing raised
        assert not terminated()
    finally:
        signal.signal(signal.SIGHUP, before[0]), signal.signal(signal.SIGINT, before[1])


def test_a_local_ray_that_ends_by_itself_fails_the_sweep_with_a_line_and_ends_the_driver(tmp_path, monkeypatch, capsys):
    """The watch of sweep/ray_watch.py, its Ray faked at the edge: a raylet killed by SIGKILL (as the kernel's OOM killer
    does) is seen within a poll; the sweep is closed without Ray (the parent FAILED: no stop was asked for; the open
    trial run KILLED, tagged) and the process ends with exit code 1. The group-wide stop is the end-to-end test below."""
    from types import SimpleNamespace

    from imdb_ray.sweep import ray_watch
    from imdb_ray.tracking import SweepRuns

    raylet = subprocess.Popen(["sleep", "60"])
    monkeypatch.setattr(ray_watch, "local_ray_processes", lambda: {"raylet": raylet})
    monkeypatch.setattr(ray_watch.ray, "get_runtime_context", lambda: SimpleNamespace(gcs_address="127.0.0.1:9"))
    monkeypatch.setattr(ray_watch, "terminated", lambda: False)
    runs = SweepRuns(fresh_store(tmp_path), "watched")
    parent_id = runs.start_parent(Path(__file__), {}, str(tmp_path / "ray" / "watched"))
    trial = runs.client.create_run(runs.experiment_id(), tags={"mlflow.parentRunId": parent_id}).info.run_id
    ended = []
    with ray_watch.watching_local_ray(lambda what: ray_watch.close_without_ray(what, str(tmp_path / "ray"), runs, parent_id),
                                      poll_s=0.05, end_process=ended.append):
        time.sleep(0.3)
        assert ended == []  # a live Ray is left alone
        raylet.kill()
        deadline = time.time() + 10
        while not ended and time.time() < deadline:
            time.sleep(0.05)
    assert ended == [1]
    assert capsys.readouterr().out.strip() == (
        "[imdb_ray] the sweep's local Ray ended under it (raylet was killed by SIGKILL; not stopped by this command: the "
        "kernel's out-of-memory killer, or a crash; Ray's logs: /tmp/ray/session_latest/logs); Tune's state as last saved under "
        f"{tmp_path / 'ray'} is kept: continue with the same command plus --resume")
    assert runs.client.get_run(parent_id).info.status == "FAILED"
    stopped = runs.client.get_run(trial)
    assert stopped.info.status == "KILLED" and "raylet was killed by SIGKILL" in stopped.data.tags["imdb_ray.stopped"]
    # closing the runs may hang (an MLflow server gone too, retried for minutes): the process ends all the same
    monkeypatch.setattr(ray_watch, "CLOSE_S", 0.2)
    ended.clear()
    with ray_watch.watching_local_ray(lambda what: time.sleep(60), poll_s=0.05, end_process=ended.append):
        deadline = time.time() + 10
        while not ended and time.time() < deadline:
            time.sleep(0.05)
    assert ended == [1]


def test_a_stop_while_ray_starts_takes_effect_once_it_has_started(ray_address):
    """Ray's start is not cut midway: a SIGTERM or Ctrl-C inside stops_held() is held and raised when the block ends
    (a SIGTERM raised inside ray.init once left the logging module's lock taken, and the sweep hung); and ray.init
    puts in no SIGTERM handler of its own (sys.exit) under ray_init_leaving_sigterm_alone()."""
    import ray

    from imdb_ray.interrupts import sigterm_as_interrupt, stops_held, terminated
    from imdb_ray.sweep.ray_compat import ray_init_leaving_sigterm_alone

    for signum in (signal.SIGTERM, signal.SIGINT):
        with sigterm_as_interrupt():
            handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
            seen = []
            with pytest.raises(KeyboardInterrupt):
                with stops_held():
                    os.kill(os.getpid(), signum)
                    time.sleep(0.5)  # a handler that raised would end the sleep here
                    seen.append("ran to its end")
            assert seen == ["ran to its end"] and terminated() == (signum == signal.SIGTERM)
            assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # put back
    with stops_held(), ray_init_leaving_sigterm_alone():
        held = signal.getsignal(signal.SIGTERM)
        ray.init(address=ray_address, logging_level="ERROR")
        assert signal.getsignal(signal.SIGTERM) is held  # not Ray's sys.exit
    ray.shutdown()


def test_a_hub_that_answers_is_left_to_transformers(workspace, capsys, monkeypatch):
    """needs_download refuses only when nothing answers at the hub's address. A hub that answers, here with
    404 for every file (a repository that does not exist), is left to from_pretrained: its own one-line refusal."""
    import http.server

    asked = []

    class NoSuchRepository(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            asked.append(self.path)
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.end_headers()

        do_GET = do_HEAD

    with http_server(NoSuchRepository) as hub:
        endpoint = f"http://{hub}"
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", endpoint)
        monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        code = main(["train", "--model", "hf", "--checkpoint", "imdb-ray-tests/never-downloaded"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "checkpoint 'imdb-ray-tests/never-downloaded' cannot be loaded" in err[0], err
    assert asked.count("/imdb-ray-tests/never-downloaded/resolve/main/config.json") > 1  # the probe's, then transformers'


def test_the_matrix_is_big_enough():
    assert len(BAD_INPUTS) >= 20


# ---------------------------------------------------------------------------------- faults
pytest_slow = pytest.mark.slow


def trial_runs(uri, experiment):
    client, _, children = sweep_runs(uri, experiment)
    return client, children


GRU = {"model": "gru", "hidden": 32, "lr": 3e-3, "batch_size": 32, "n_train": 1600, "n_test": 100, "max_len": 128,
       "embed_dim": 32, "w2v_epochs": 2, "w2v_workers": 1}


def killable_sweep(tmp_path, name: str, space: str, settings: str, address: str | None = None):
    """A small GRU sweep file (400 reviews, 2 epochs; `space` and `settings` in source form), started one
    trial at a time in its own process group, so a test can SIGKILL the whole driver. Its output: driver.log."""
    base = {k: v for k, v in GRU.items() if k not in ("model", "hidden", "lr")}
    sweep = tmp_path / f"{name}.py"
    sweep.write_text("from ray import tune\nfrom imdb_ray.sweep import Sweep\n"
                     f"sweep = Sweep(name={name!r}, space={{{space}, **{ {**base, 'n_train': 400, 'epochs': 2}!r}}}, "
                     f"{settings}, trainer='direct', cpus_per_worker=0.95)\n")
    uri = fresh_store(tmp_path)  # the store's tables made here: the test's polling and the driver would
    # otherwise both create them at once, and the loser's migration fails (CommandError)
    with open(tmp_path / "driver.log", "w") as log:
        proc = subprocess.Popen(sweep_command(tmp_path, sweep, "--max-concurrent", "1", address=address), cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return sweep, proc, uri


@pytest_slow
def test_killed_train_worker_resumes_from_its_checkpoint(tmp_path, ray_cluster):
    """One of the two DDP workers (gloo) of a trial killed mid-epoch: Train restarts the group from the
    last checkpoint, and no epoch is logged twice. On the shared Ray: its workers are the raylet's children."""
    sweep = write_sweep(tmp_path, "worker_kill", {**GRU, "n_train": 1000, "epochs": 5}, search="random", scheduler="fifo", num_samples=1,
                         trainer="ray_train", workers_per_trial=2, cpus_per_worker=0.9, max_failures=2)
    started = time.time()
    proc = subprocess.Popen(sweep_command(tmp_path, sweep, address=ray_cluster.address), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    db = tmp_path / "mlflow.db"
    wait_for(lambda: max_step(db) >= 1, 300, "the first epoch", proc)
    raylet = psutil.Process(ray_cluster.head_node.all_processes["raylet"][0].process.pid)
    workers = [p for p in raylet.children(recursive=True)  # this sweep's (an earlier test's may still be exiting)
               if "RayTrainWorker" in " ".join(p.cmdline()) and p.create_time() >= started - 1]
    assert len(workers) == 2
    killed_after = max_step(db)
    workers[1].kill()  # SIGKILL: one rank dies mid-epoch, no cleanup
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert killed_after < 5, "the kill came too late to interrupt the trial"
    assert "== worker_kill: 1 trials, 0 errored ==" in out
    client, children = trial_runs(f"sqlite:///{db}", "worker_kill")
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    params = children[0].data.params  # batch_size is per worker; the optimiser steps on both
    assert params["workers_per_trial"] == "2" and params["global_batch_size"] == str(2 * GRU["batch_size"])
    logged = steps(client, children[0])
    assert logged == [1, 2, 3, 4, 5], f"duplicated or missing epochs: {logged}"  # resumed, not restarted
    record_row("Fault", "one of a trial's two Ray Train (DDP) workers SIGKILLed during epoch " + str(killed_after + 1) + " of 5",
                   "Train restarted the worker group from the last epoch checkpoint; the trial finished 5 epochs; "
                   f"MLflow steps {logged}", "the interrupted part of one epoch")


def kill_when(proc: subprocess.Popen, ready, what: str, log: Path, sig: int = signal.SIGKILL) -> None:
    """SIGKILL the driver's whole process group once `ready()` holds (it may raise while the store is young);
    SIGINT or SIGTERM: the driver alone, as Ctrl-C or `kill` (then the driver ends itself, or is killed after
    120 s). `log`: the driver's output, quoted if it ends or stalls first."""
    def holds():
        try:
            return ready()
        except Exception:
            return False

    try:
        deadline = time.time() + 400
        while not holds():
            assert proc.poll() is None, f"the driver ended before {what}: {log.read_text()[-3000:]}"
            assert time.time() < deadline, f"timed out waiting for {what}: {log.read_text()[-3000:]}"
            time.sleep(0.3)
    finally:
        if sig != signal.SIGKILL:
            proc.send_signal(sig)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):  # what is left of the group (none after a clean Ctrl-C)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_a_checkpoint_the_saved_state_names_but_tune_replaced_is_recovered(tmp_path):
    """The driver died after Tune deleted checkpoint_000000 for checkpoint_000001 but before it saved the
    experiment state: the restore gets the newer one, under the recorded name, at its own epoch."""
    import torch
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    from imdb_ray.sweep.trial import newest_on_storage
    from imdb_ray.checkpoint import CHECKPOINT_FILE

    for index, epoch in ((1, 2), (2, 3)):
        (tmp_path / f"checkpoint_00000{index}").mkdir()
        torch.save({"epoch": epoch}, tmp_path / f"checkpoint_00000{index}" / CHECKPOINT_FILE)
    recorded = _TrainingResult(checkpoint=Checkpoint(str(tmp_path / "checkpoint_000000")), metrics={"training_iteration": 1, "lr": 0.1})
    restored = newest_on_storage(recorded)
    assert restored.checkpoint.path == str(tmp_path / "checkpoint_000000")
    assert restored.metrics == {"training_iteration": 3, "lr": 0.1}
    assert torch.load(tmp_path / "checkpoint_000000" / CHECKPOINT_FILE)["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000000", "checkpoint_000001"]
    assert newest_on_storage(restored) is restored  # present: taken as it is
    gone = _TrainingResult(checkpoint=Checkpoint(str(tmp_path / "elsewhere" / "checkpoint_000004")), metrics={})
    assert newest_on_storage(gone) is gone  # nothing to recover from: Tune's own error


def living_in_group(group: int) -> list[str]:
    """The command lines of the processes of a process group that still run (zombies left out: not ours to reap)."""
    def member(p):
        with contextlib.suppress(ProcessLookupError):
            return os.getpgid(p.pid) == group and p.info["status"] != psutil.STATUS_ZOMBIE
        return False

    return [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["status", "cmdline"]) if member(p)]


@pytest_slow
def test_a_sweep_stopped_while_its_ray_starts_says_terminated(tmp_path):
    """SIGTERM in the seconds `ray.init` takes met Ray's own handler (sys.exit(15)): exit 15 and not a line; or,
    raised inside the logging module's at-fork callback, it was swallowed and left logging's lock taken, and the
    sweep hung (in one full suite run here, then 2 of 12 tries under load). Now it ends, once Ray has started, as a
    stop at any other moment does. A local Ray of the sweep's own, as on a laptop."""
    sweep, proc, uri = killable_sweep(tmp_path, "early", "'model': 'gru'", "search='random', scheduler='fifo', num_samples=1")
    log = tmp_path / "driver.log"
    deadline = time.time() + 120
    while "starting Ray" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    time.sleep(0.5)  # inside ray.init: starting Ray's processes takes seconds
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    out = log.read_text()
    assert proc.returncode == 143 and out.strip().splitlines()[-1] == "terminated" and "Traceback" not in out, out[-3000:]
    assert "MLflow parent run" not in out and not sweep_runs(uri, "early")[1]  # stopped before its parent run
    time.sleep(2)  # Ray's atexit stops the processes it had started
    assert not living_in_group(proc.pid)
    record_row("Fault", "sweep driver SIGTERMed while its local Ray starts (inside `ray.init`)",
               "exit 143, last line `terminated`, once Ray has started (was: exit 15 and no line, Ray's own handler; "
               "or, at a fork, the stop swallowed and the sweep hung); no MLflow parent run; no process of its Ray left",
               "nothing (no trial had started)")


@pytest_slow
def test_a_stop_sent_to_the_whole_process_group_ends_the_sweep_at_once_and_it_resumes(tmp_path):
    """`timeout`, `kill -- -PGID`, systemd and SLURM stop every process of the job, the local Ray's GCS and raylet too.
    The driver's next call into Ray (Tune's graceful stop) then waited 60 s before Ray aborted it: no line, and its
    MLflow runs stayed RUNNING. Now it sees its Ray end (sweep/ray_watch.py), closes the sweep without Ray and exits;
    --resume continues from Tune's last saved state. A local Ray of the sweep's own, as on a laptop or a batch node."""
    sweep, proc, uri = killable_sweep(tmp_path, "group", "'model': 'gru', 'hidden': 32, 'lr': tune.grid_search([1e-3, 3e-3])",
                                      "search='grid', scheduler='fifo'")
    wait_for(lambda: max_step(tmp_path / "mlflow.db") >= 1, 300, "the first epoch", proc)
    stopped_at = time.time()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):  # what is left of the group: nothing, once it ended itself
            kill_group(proc)
    took, out = time.time() - stopped_at, (tmp_path / "driver.log").read_text()
    assert proc.returncode == 143 and out.strip().splitlines()[-1] == "terminated" and "Traceback" not in out, out[-3000:]
    assert "the sweep's local Ray ended under it" in out and "continue with the same command plus --resume" in out, out[-3000:]
    assert took < 15, f"{took:.0f} s to end (Ray's own client gives up after 60 s)"
    client, parents, children = sweep_runs(uri, "group")
    assert [p.info.status for p in parents] == ["KILLED"] and children
    assert not [c for c in children if c.info.status == "RUNNING"]
    resumed = subprocess.run(sweep_command(tmp_path, sweep, "--resume"), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "== group: 2 trials, 0 errored" in resumed.stdout, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client, parents, children = sweep_runs(uri, "group")
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert all(c.info.status == "FINISHED" and steps(client, c) == [1, 2] for c in children if "imdb_ray.orphaned" not in c.data.tags)
    record_row("Fault", "SIGTERM to the sweep's whole process group during a trial (as `timeout`, `kill -- -PGID`, systemd "
                        "and SLURM send it), which stops its local Ray's GCS and raylet too",
               f"exit 143 in {took:.0f} s with a line saying Ray ended and to --resume (was: 60 s waiting on the dead GCS, then "
               "Ray's abort, no line, MLflow runs left RUNNING); parent and open trial runs KILLED; `--resume` finished both "
               "trials, every epoch logged once", "the epoch in progress")


@pytest_slow
def test_killed_driver_resumes_without_rerunning(tmp_path, ray_address):
    """Optuna over a conditional space whose four configs are all distinct, then the winner confirmed with
    seeds 1 and 2. The driver is stopped twice: Ctrl-C (SIGINT) after the first finished search trial,
    SIGKILL of its whole process group at a confirmation rerun's last epoch. Each `--resume` continues
    Tune's trials and Optuna's study, or the confirmation stage's own experiment, and runs only what is missing.
    The drivers join the suite's Ray, as on a cluster: a dead driver's trials end with it (Ray's job cleanup)."""
    sweep, proc, uri = killable_sweep(tmp_path, "resumable", "'model': {'gru': {'hidden': 32, 'lr': tune.choice([1e-3, 3e-3, 1e-2, 3e-2])}}",
                                      "search='optuna', scheduler='fifo', num_samples=4, confirm_top=1, confirm_seeds=2", ray_address)
    kill_when(proc, lambda: any(c.info.status == "FINISHED" for c in trial_runs(uri, "resumable")[1]), "a finished trial",
              tmp_path / "driver.log", signal.SIGTERM)
    interrupted = (tmp_path / "driver.log").read_text()
    assert proc.returncode == 143 and "continue with the same command plus --resume" in interrupted, interrupted[-2000:]
    assert "test evaluation" not in interrupted and "SIGTERM received" not in interrupted  # Tune's stop, not Ray's abort
    client, children = trial_runs(uri, "resumable")
    assert [p.info.status for p in sweep_runs(uri, "resumable")[1]] == ["KILLED"]  # until --resume
    finished_before = {c.data.tags["trial_id"]: steps(client, c) for c in children if c.info.status == "FINISHED"}
    study_file = tmp_path / "ray" / "resumable" / "optuna.sqlite"
    (study_name,) = optuna.get_all_study_names(f"sqlite:///{study_file}")
    told_before = {t.number: t.params for t in optuna.load_study(study_name=study_name, storage=f"sqlite:///{study_file}").trials
                   if t.state.is_finished()}
    assert told_before, "the study holds no finished trial when the driver is killed"
    # the first resume: the search ends, the confirmation starts; killed after its first rerun
    reruns = lambda: sweep_runs(uri, "resumable", stage="confirm")[2]  # noqa: E731
    with open(tmp_path / "driver2.log", "w") as log:
        second = subprocess.Popen(sweep_command(tmp_path, sweep, "--resume", "--max-concurrent", "1", address=ray_address), cwd=tmp_path, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    # killed when a rerun has logged its last epoch: mostly before it is marked finished, when Tune may
    # already have replaced the checkpoint its last saved state names (DirectTrial.restore's case)
    kill_when(second, lambda: any(steps(client, c) == [1, 2] for c in reruns()), "a confirmation rerun's last epoch",
              tmp_path / "driver2.log")
    confirmed_before = {c.info.run_id: steps(client, c) for c in reruns() if c.info.status == "FINISHED"}
    assert len(confirmed_before) < 2, "both reruns finished before the kill: the resume has nothing to do"
    resumed = subprocess.run(sweep_command(tmp_path, sweep, "--resume", address=ray_address), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "== resumable: 4 trials, 0 errored" in resumed.stdout and "2 seeds)" in resumed.stdout
    client, children = trial_runs(uri, "resumable")
    parents = [r for r in client.search_runs([client.get_experiment_by_name("resumable").experiment_id])
               if r.data.tags.get("imdb_ray.kind") == "sweep"]
    # Trials Tune had not snapshotted when the driver died are sampled again; their partial runs
    # stay in MLflow, marked KILLED and tagged. Every other trial continues its own run.
    live = [c for c in children if c.info.status != "KILLED"]
    assert len(parents) == 1 and len(live) == 4
    assert all("imdb_ray.orphaned" in c.data.tags for c in children + reruns() if c.info.status == "KILLED")
    for c in live:
        h = steps(client, c)
        assert h == list(range(1, len(h) + 1)), f"duplicated or missing steps {h}"
        if c.data.tags["trial_id"] in finished_before:
            assert h == finished_before[c.data.tags["trial_id"]]  # not rerun
    # the searcher's history survived: the same study, its earlier trials kept, every config once
    after = optuna.load_study(study_name=study_name, storage=f"sqlite:///{study_file}").trials
    assert all(after[n].params == p and after[n].state.is_finished() for n, p in told_before.items())
    assert sorted(float(c.data.params["lr"]) for c in live) == [1e-3, 3e-3, 1e-2, 3e-2]
    # the confirmation: each new seed once, every rerun tested; the one finished before the kill kept
    confirmed = [c for c in reruns() if c.info.status != "KILLED"]
    assert sorted(c.data.params["seed"] for c in confirmed) == ["1", "2"]
    assert all(c.info.status == "FINISHED" and "test_accuracy" in c.data.metrics for c in confirmed)
    assert all(steps(client, c) == [1, 2] for c in confirmed), "a rerun lost or repeated an epoch"
    for run_id, history in confirmed_before.items():
        assert run_id in {c.info.run_id for c in confirmed} and steps(client, client.get_run(run_id)) == history
    record_row("Fault", "sweep driver stopped by SIGTERM, handled as Ctrl-C, after the first finished trial (it exits 143, "
                        "evaluates nothing, marks its MLflow parent KILLED, says to --resume), then SIGKILLed (whole process group) at a confirmation rerun's last epoch",
                   f"each `--resume` went on: {len(finished_before)} finished trial(s) and {len(confirmed_before)} finished "
                   f"rerun(s) not rerun, one parent run, {len(live)} live child runs, {len(confirmed)} confirmation reruns, "
                   f"{len(children) - len(live)} unsnapshotted run(s) marked KILLED",
                   "the epochs of trials Tune had not yet snapshotted (they are rerun)" if len(children) > len(live) else "nothing")


MLFLOW_SWEEP = {**GRU, "n_train": 400, "epochs": 3}
OUTAGE_S = 6  # how long the store stays down in the comes-back case (the sweep retries every 2 s)


@pytest_slow
@pytest.mark.parametrize("comes_back", [True, False], ids=["comes-back", "never-comes-back"])
def test_tracking_server_goes_away_mid_sweep(tmp_path, monkeypatch, comes_back, ray_address):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # this test's own client: fail fast
    db, port = tmp_path / "server.db", free_port()
    fresh_store(tmp_path, db.name)  # the server starts on made tables (making them costs it seconds)
    server = mlflow_server(db, port, tmp_path)
    uri = f"http://127.0.0.1:{port}"
    sweep = write_sweep(tmp_path, "outage", MLFLOW_SWEEP, {"lr": [1e-3, 3e-3, 1e-2]}, search="grid", scheduler="fifo", num_samples=1,
                         trainer="direct", cpus_per_worker=0.95, max_concurrent=1)
    # coming back, the sweep may end while the store is still down: it waits for it (at most 60 s)
    env = {**os.environ, "IMDB_RAY_MLFLOW_WAIT_S": "60" if comes_back else "5", "IMDB_RAY_MLFLOW_RETRY_S": "2"}
    proc = subprocess.Popen(sweep_command(tmp_path, sweep, uri=uri, address=ray_address), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env=env)
    try:
        wait_for(lambda: max_step(db) >= 1, 300, "the first logged epoch", proc)
        kill_group(server)
        time.sleep(OUTAGE_S)  # trials go on while the store is down
        if comes_back:
            server = mlflow_server(db, port, tmp_path)
        out = finish(proc)
    finally:
        if server.poll() is None and not comes_back:
            kill_group(server)
    assert proc.returncode == 0, out[-3000:]
    assert "== outage: 3 trials, 0 errored ==" in out and "stopped answering" in out
    experiment = tmp_path / "ray" / "outage"
    ray_epochs = sorted(len((d / "result.json").read_text().splitlines()) for d in experiment.iterdir() if (d / "result.json").exists())
    assert ray_epochs == [3, 3, 3]  # Ray keeps every result whatever MLflow does
    if comes_back:
        assert "answers again" in out
        client, children = trial_runs(uri, "outage")
        logged = [steps(client, c) for c in children]
        kill_group(server)
        assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
        assert logged == [[1, 2, 3]] * 3, f"metrics lost or duplicated: {logged}"
        record_row("Fault", f"MLflow server killed mid-sweep, restarted {OUTAGE_S} s later",
                       "trials went on; the buffered run starts, epoch metrics and ends were written when it answered; "
                       "3 child runs with steps [1, 2, 3] each", "nothing")
    else:
        assert f"Nothing is lost: every trial's metrics are in {experiment}" in out
        record_row("Fault", "MLflow server killed mid-sweep, never back",
                       "the sweep finished (exit 0) and said which events are not in MLflow and where Ray keeps them "
                       f"(result.json per trial: {ray_epochs} epochs)", "nothing (MLflow misses the events after the outage)")


@pytest_slow
def test_failing_trials_are_recorded_and_the_sweep_goes_on(tmp_path, ray_address):
    """A trial that crashes (out of memory) is the sweep's to survive: recorded, and the others go on."""
    space = {k: v for k, v in GRU.items() if k != "hidden"}
    sweep = write_sweep(tmp_path, "failing", {**space, "n_train": 400, "epochs": 2}, {"hidden": [16, 1_000_000]}, search="grid",
                        scheduler="fifo", num_samples=1, trainer="direct", cpus_per_worker=0.95, max_failures=0)
    proc = subprocess.run(sweep_command(tmp_path, sweep, address=ray_address), cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "== failing: 2 trials, 1 errored ==" in proc.stdout
    failed_lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("FAILED")]
    assert len(failed_lines) == 1 and "MemoryError" in failed_lines[0] and "does not fit in memory (asked for" in failed_lines[0]
    assert re.search(r"asked for [\d,]+ GiB", failed_lines[0]), failed_lines[0]
    client, children = trial_runs(f"sqlite:///{tmp_path}/mlflow.db", "failing")
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 1 and len([c for c in children if c.info.status == "FINISHED"]) == 1
    text = Path(client.download_artifacts(failed[0].info.run_id, "error.txt", str(tmp_path))).read_text()
    assert 'File "' in text and "imdb_ray/" in text  # the frames, down to our code
    assert failed[0].data.tags["error"].startswith("MemoryError") and failed[0].data.tags["error"] in text
    record_row("Fault", "a trial that runs out of memory (GRU hidden=10^6 asks for 12 TB)",
               "marked FAILED in MLflow with error.txt (traceback) and an `error` tag; the sweep went on; "
               "the leaderboard lists it: " + failed_lines[0].split(": ", 1)[1][:160], "nothing (the good trial finished and was evaluated)")


@pytest_slow
def test_a_trial_failing_on_its_configuration_fails_the_sweep(tmp_path, ray_address, capsys):
    """The net under validation: a user error that only a trial sees (here device='cuda' on a machine without
    one, put past validation on purpose) ends the sweep with that error's line; nothing evaluated, no champion."""
    from imdb_ray.errors import UserError
    from imdb_ray.sweep import load_sweep
    from imdb_ray.sweep.runner import run_sweep

    base = {k: v for k, v in GRU.items() if k != "embed_dim"}
    path = write_sweep(tmp_path, "misconfigured", {**base, "n_train": 400, "epochs": 1, "max_len": 64}, search="random",
                       scheduler="fifo", num_samples=1, trainer="direct", cpus_per_worker=0.95)
    sweep = load_sweep(path)
    missed = dataclasses.replace(sweep, space={**sweep.space, "device": "cuda"})  # what validation would refuse
    uri = fresh_store(tmp_path)
    with pytest.raises(UserError) as refused:
        run_sweep(missed, address=ray_address, storage=str(tmp_path / "ray"), tracking_uri=uri, cache_dir=str(tmp_path / "cache"))
    message = str(refused.value)
    assert "\n" not in message and "failed on its configuration: device='cuda' but no CUDA GPU is visible" in message, message
    assert "best trial" not in capsys.readouterr().out
    client = MlflowClient(uri)
    assert not client.search_registered_models()
    runs = client.search_runs([client.get_experiment_by_name("misconfigured").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FAILED"] and not any("test_accuracy" in r.data.metrics for r in runs)
    with pytest.MonkeyPatch.context() as patched, pytest.raises(RuntimeError, match="a bug"):  # the driver crashes
        patched.setattr("imdb_ray.sweep.runner.build_tuner", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
        run_sweep(sweep, address=ray_address, storage=str(tmp_path / "ray"), tracking_uri=uri, cache_dir=str(tmp_path / "cache"))
    parents = client.search_runs([client.get_experiment_by_name("misconfigured").experiment_id], "tags.`imdb_ray.kind` = 'sweep'")
    assert [p.info.status for p in parents] == ["FAILED", "FAILED"]  # not RUNNING forever
    record_row("Bad input", "a trial that fails on its configuration (device='cuda' without a GPU, past validation)",
               "the sweep ends with exit 2 and that trial's one-line error; the MLflow parent run is FAILED", "no test "
               "evaluation, no champion registered; the trial's record stays in MLflow and Ray's results")


@pytest_slow
def test_time_budget_ends_the_sweep_and_keeps_what_finished(tmp_path, ray_address):
    sweep = write_sweep(tmp_path, "budget", {**GRU, "n_train": 400, "max_len": 64, "epochs": 1000}, search="random", scheduler="fifo", num_samples=6,
                         trainer="direct", cpus_per_worker=0.95)
    proc = subprocess.run(sweep_command(tmp_path, sweep, "--time-budget", "60s", address=ray_address), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sweep ended early (time budget 60s)" in proc.stdout
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client, children = trial_runs(uri, "budget")
    assert children and all(c.info.status == "KILLED" for c in children)  # none can run 1000 epochs in 60 s
    # (the budget counts from the search's start, so it includes the trial process's start-up: 8.5 s to the
    # first epoch on an idle fast machine, but on CI's 2.3x slower 2 cores, shared with another test's sweep,
    # a 30 s budget once ended before the only trial finished an epoch; an epoch of 360 reviews is <1 s)
    assert all(c.data.tags["imdb_ray.stopped"].startswith("sweep ended (time budget or interrupt) after epoch") for c in children)
    reached = [steps(client, c) for c in children]
    assert any(reached) and all(h == list(range(1, len(h) + 1)) for h in reached)
    # what they finished still counts: the best by validation was evaluated on test, and the report lists them
    best = [c for c in children if c.data.tags.get("best_trial") == "true"]
    assert len(best) == 1 and "test_accuracy" in best[0].data.metrics
    out = tmp_path / "results"
    report = subprocess.run([sys.executable, "-m", "imdb_ray", "report", "--sweep", "budget", "--out", str(out),
                             "--tracking-uri", uri], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    rows = (out / "budget_leaderboard.csv").read_text().splitlines()[1:]
    assert len(rows) == len(children) and all("killed: sweep ended" in r for r in rows)
    record_row("Fault", "the sweep's time budget (`--time-budget 60s`) runs out while trials are training",
                   f"Tune stopped them; {len(children)} child runs closed as KILLED with an `imdb_ray.stopped` tag "
                   f"(epochs reached: {sorted(len(h) for h in reached)}); the best was evaluated on test; the report "
                   "ranks them on the epochs they finished", "the unfinished epochs and the samples never started")


def test_cache_entry_killed_while_writing_is_never_used(tmp_path):
    code = ("import sys, time, torch\nfrom imdb_ray.cache import load_or_build\n"
            "def build():\n    print('building', flush=True)\n    time.sleep(60)\n    return {'v': torch.ones(3)}\n"
            f"load_or_build({str(tmp_path)!r}, 'entry', build)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "building"
    proc.kill()
    proc.wait()
    import torch

    from imdb_ray.cache import load_or_build

    assert not (tmp_path / "entry.pt").exists()  # nothing half-written under the real name
    value = load_or_build(tmp_path, "entry", lambda: {"v": torch.zeros(3)})  # the dead writer's lock is free
    assert torch.equal(value["v"], torch.zeros(3))
    (tmp_path / "entry.pt").write_bytes((tmp_path / "entry.pt").read_bytes()[:40])  # truncated on disk
    assert torch.equal(load_or_build(tmp_path, "entry", lambda: {"v": torch.full((3,), 2.0)})["v"], torch.full((3,), 2.0))
    record_row("Fault", "cache writer SIGKILLed mid-build; then an entry truncated on disk",
                   "no entry under the real name after the kill (written to a temporary name, renamed when complete); "
                   "the truncated entry failed to load and was rebuilt", "the killed build's work")


# ---------------------------------------------------------------------------------- safe defaults
def test_checkpoints_load_with_weights_only():
    calls = []
    for path in (ROOT / "imdb_ray").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load" and \
                    getattr(getattr(node.func, "value", None), "id", "") == "torch":
                ok = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                calls.append((path.name, node.lineno, ok))
    assert calls and all(ok for *_, ok in calls), calls
    record_row("Safe default", "torch.load", f"all {len(calls)} calls pass weights_only=True (checked in the source)", "-")


def test_secrets_are_never_logged(monkeypatch):
    from imdb_ray.redact import safe_params

    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-value-1234")
    params = {"lr": 0.001, "api_key": "abc", "hf_token": "x", "checkpoint": "bert-base-uncased", "num_virtual_tokens": 20,
              "note": "hf_" + "a" * 34, "data": "s3://bucket?sig=s3cr3t-value-1234", "aws": "AKIA" + "A" * 16}
    assert safe_params(params) == {"lr": 0.001, "checkpoint": "bert-base-uncased", "num_virtual_tokens": 20}
    record_row("Safe default", "secret-looking parameters",
                   "dropped before MLflow: secret-like names, token-shaped values (hf_, sk-, AKIA, gh*_), values of "
                   "secret-named environment variables", "-")


def test_secret_scan_survives_a_variable_unset_by_another_thread(monkeypatch):
    """MLflow's telemetry thread unsets _MLFLOW_TELEMETRY_SESSION_ID while the sweep logs its parent run's params:
    a name listed, then gone when its value is read (this crashed a sweep with KeyError)."""
    from collections import UserDict
    from types import SimpleNamespace

    import imdb_ray.redact as redact

    class VanishingEnviron(UserDict):  # lists a name whose value is gone by the time it is read
        def __iter__(self):
            return iter([*self.data, "_GONE_SESSION_TOKEN"])

    monkeypatch.setattr(redact, "os", SimpleNamespace(environ=VanishingEnviron({"MY_SERVICE_TOKEN": "s3cr3t-value-1234"})))
    assert redact.safe_params({"lr": 0.1, "data": "s3://b?sig=s3cr3t-value-1234"}) == {"lr": 0.1}


def test_local_ray_and_ui_bind_to_localhost(monkeypatch, tmp_path):
    import ray

    from imdb_ray.sweep import load_sweep, runner

    seen = {}

    def fake_init(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.setattr(runner, "prepare_shared_data", lambda s: [])
    monkeypatch.setattr(runner, "check_reachable", lambda uri: None)
    with pytest.raises(RuntimeError, match="stop here"):
        runner.run_sweep(load_sweep(ROOT / "sweeps" / "smoke.py"), address=None, storage="/tmp/x",
                         tracking_uri=fresh_store(tmp_path))
    assert seen["dashboard_host"] == "127.0.0.1" and seen["address"] == "local"  # its own Ray, never one found running
    from imdb_ray.__main__ import build_parser

    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    record_row("Safe default", "network exposure",
                   "local Ray: dashboard_host=127.0.0.1 (dashboard off unless --dashboard); `ui`: --host 127.0.0.1 "
                   "(serving on it is tested in test_ui.py)", "-")


def test_ui_on_a_taken_port_is_refused_before_the_server_starts(capsys, monkeypatch, tmp_path):
    import socket
    import subprocess as sp

    started = []
    monkeypatch.setattr(sp, "Popen", lambda *a, **k: started.append(a))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code = main(["ui", "--port", str(port), "--tracking-uri", fresh_store(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"--port {port} on 127.0.0.1 is not free" in err[0] and not started, err
    record_row("Bad input", "ui on a port another server holds", f"exit 2: {code_span(err[0].replace(str(port), 'PORT'))}",
               "nothing (no server started)")


def test_readme_says_sweep_files_are_code():
    assert "are Python and therefore code: only run ones you trust." in " ".join((ROOT / "README.md").read_text().split())
    record_row("Safe default", "sweep files run as Python", "the README says so where sweeps are introduced", "-")


# ---------------------------------------------------------------------------------- the record
N_FAULT_ROWS = 11  # worker kill, driver kill, driver stopped in ray.init, group stop, two outages, failing trials, time budget, cache,
# stopped train, memory
N_MORE_BAD_ROWS = 2  # a trial failing on its configuration, ui on a taken port
N_DEFAULT_ROWS = 5  # + the ui row (test_ui.py)
N_FUZZ_ROWS = 5  # sweep files, range violations, data files, command lines, what it found (test_fuzz.py)
SECTIONS = ("Fault", "Bad input", "Fuzzer", "Safe default")  # headings: "Faults", "Bad inputs", ...


def write_record(rows: list[dict], passed: bool) -> str:
    """results/reliability.md from this run's rows (called by conftest when the session ends), only
    when the run passed and every case of this module recorded its row. Returns what it did, for the log."""
    expected = len(BAD_INPUTS) + N_FAULT_ROWS + N_MORE_BAD_ROWS + N_DEFAULT_ROWS + N_FUZZ_ROWS
    if not passed or len(rows) != expected:  # a partial or failing run records nothing
        return (f"results/reliability.md left as it was: {'the run failed' if not passed else 'a partial run'}; "
                f"{len(rows)} rows recorded, {expected} expected (a new recording test: count it in N_*_ROWS)")
    matrix = [b[0] for b in BAD_INPUTS]
    rows = sorted(rows, key=lambda r: (SECTIONS.index(r["section"]), matrix.index(r["case"]) if r["case"] in matrix else 0,
                                       r["order"], r["case"]))
    lines = ["# Reliability record", "",
             "Written by the test suite (`make record`: `make test` that records) when it passes with every case of tests/test_reliability.py,",
             f"test_fuzz.py and test_ui.py; last written {time.strftime('%Y-%m-%d')}. Each row is one test's observed",
             "outcome, not a claim.", ""]
    for section in SECTIONS:
        chosen = [r for r in rows if r["section"] == section]
        lines += [f"## {section}s ({len(chosen)})", "", "| case | what happened | what was lost |", "|---|---|---|"]
        lines += [f"| {r['case']} | {r['what'].replace('|', '/')} | {r['lost']} |" for r in chosen] + [""]
    (ROOT / "results" / "reliability.md").write_text("\n".join(lines))
    return f"results/reliability.md written: {len(rows)} rows"
