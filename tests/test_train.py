"""The loop, the cache, the checkpoint, and the `train` / `models` commands."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MINILM
from helpers import cli, fresh_store
from imdb_ray.__main__ import main
from imdb_ray.cache import load_or_build
from imdb_ray.config import TrialConfig
from imdb_ray.errors import UserError
from imdb_ray.text import PAD_ID, UNK_ID, build_vocab, encode, padded_width, prepare_word_data
from imdb_ray.train import train


def test_vocab_and_encoding_keep_true_lengths():
    vocab = build_vocab([["good", "film", "good"], ["bad", "film"]], min_freq=1, max_size=10)
    assert vocab[PAD_ID] == "<pad>" and vocab[UNK_ID] == "<unk>" and PAD_ID != UNK_ID
    ids, lengths = encode([["good", "unseen"], ["film"] * 9, []], vocab, max_len=4)
    assert lengths.tolist() == [2, 4, 1]
    assert ids[0].tolist() == [vocab.index("good"), UNK_ID, PAD_ID, PAD_ID]
    assert ids[2].tolist() == [UNK_ID, PAD_ID, PAD_ID, PAD_ID]
    # as wide as the longest row, not max_len: a max_len past every text keeps whole texts and costs nothing more
    ids, lengths = encode([["good", "unseen"], ["film"] * 9, []], vocab, max_len=10**12)
    assert ids.shape == (3, 9) and lengths.tolist() == [2, 9, 1]
    # predict's batches: widths rounded up to a multiple (few shapes), never past max_len, the lengths true
    ids, lengths = encode([["good", "unseen"], ["film"] * 9], vocab, max_len=100, pad_to_multiple_of=8)
    assert ids.shape == (2, 16) and lengths.tolist() == [2, 9] and ids[1, 9:].eq(PAD_ID).all()
    assert [padded_width(n, 200, 32) for n in (1, 32, 33, 190, 200)] == [32, 32, 64, 192, 200]


def test_train_says_what_it_builds_while_it_builds_it(tmp_path, capsys, monkeypatch):
    """Data preparation on the full split is minutes of Word2Vec: the command prints each build and each Word2Vec
    epoch as a progress line (stdout; stderr stays free for the one-line error). --quiet, or the cache, prints none."""
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--model", "gru", "--n-train", "240", "--n-test", "60", "--max-len", "32", "--embed-dim", "8",
            "--w2v-epochs", "2", "--hidden", "8", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
            "--tracking-uri", fresh_store(tmp_path)]
    code, err, out = cli([*argv, "--quiet", "--run-dir", "runs/quiet", "--cache-dir", str(tmp_path / "other")], capsys)
    assert code == 0 and "[imdb_ray]" not in out, out
    code, err, out = cli([*argv, "--run-dir", "runs/first"], capsys)
    lines = [line for line in out.splitlines() if line.startswith("[imdb_ray] ")]
    builds = [line for line in lines if line.startswith("[imdb_ray] building ")]
    assert code == 0 and builds == [f"[imdb_ray] building {what} (not in the cache {tmp_path / 'cache'}) ..." for what in
                                    ("the dataset's splits", "tokens and ids of every split", "word vectors")], out
    epochs = [line for line in lines if line.startswith("[imdb_ray] Word2Vec on 216 texts: epoch ")]
    assert [line.split("epoch ")[1].split(" ")[0] for line in epochs] == ["1/2", "2/2"]
    assert lines.index(builds[-1]) < lines.index(epochs[0]) and lines[-1].startswith("[imdb_ray] built word vectors in ")
    assert not any("[imdb_ray]" in line for line in err)
    code, err, out = cli([*argv, "--run-dir", "runs/again"], capsys)
    assert code == 0 and "[imdb_ray] build" not in out  # all from the cache


def test_second_identical_run_hits_the_cache(tiny_cfg, small_imdb):
    first = prepare_word_data(tiny_cfg, small_imdb)
    second = prepare_word_data(tiny_cfg, small_imdb)
    builds = (Path(tiny_cfg.cache_dir) / "builds.log").read_text().splitlines()
    assert len(builds) == 2  # encoded words + word2vec vectors, each built once
    assert torch.equal(first.vectors, second.vectors)
    other = prepare_word_data(dataclasses.replace(tiny_cfg, max_len=32), small_imdb)
    assert other.splits["train"]["input_ids"].shape[1] == 32
    assert len((Path(tiny_cfg.cache_dir) / "builds.log").read_text().splitlines()) == 3  # new key: one new build


def test_a_change_to_the_tokeniser_builds_new_entries(tiny_cfg, small_imdb, monkeypatch):
    """Cache keys carry a hash of the code that built the entry: new tokenisation, new entry."""
    import imdb_ray.text as text

    prepare_word_data(tiny_cfg, small_imdb)
    log = Path(tiny_cfg.cache_dir) / "builds.log"
    assert len(log.read_text().splitlines()) == 2

    def tokenize(t: str) -> list[str]:  # a different tokeniser (lower-cased words only)
        return [w for w in t.lower().split() if w.isalpha()]

    monkeypatch.setattr(text, "tokenize", tokenize)
    changed = prepare_word_data(tiny_cfg, small_imdb)
    builds = [line.split("-")[0] for line in log.read_text().splitlines()]
    assert builds[2:] == ["words", "vectors"]  # the stale entries were not reused
    assert all(w.isalpha() for w in changed.vocab[2:])


def test_corrupted_cache_entry_is_rebuilt(tmp_path):
    load_or_build(tmp_path, "x", lambda: {"v": torch.ones(3)})
    (tmp_path / "x.pt").write_bytes(b"truncated")
    assert torch.equal(load_or_build(tmp_path, "x", lambda: {"v": torch.zeros(3)})["v"], torch.zeros(3))


def test_same_seed_same_metrics(tiny_cfg, small_imdb, tmp_path):
    """Bit-equal numbers from scratch: the second run builds its own Word2Vec vectors in a fresh cache
    (two fresh-clone quickstarts once disagreed because gensim trained with two threads)."""
    a = train(tiny_cfg, dataset=small_imdb, progress=False)
    b = train(dataclasses.replace(tiny_cfg, cache_dir=str(tmp_path / "fresh")), dataset=small_imdb, progress=False)
    assert len((tmp_path / "fresh" / "builds.log").read_text().splitlines()) == 2  # words + vectors, rebuilt
    timing = ("epoch_seconds", "samples_per_second")
    strip = lambda hist: [{k: v for k, v in h.items() if k not in timing} for h in hist]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    c = train(dataclasses.replace(tiny_cfg, seed=1), dataset=small_imdb, progress=False)
    assert strip(c.history) != strip(a.history)


def test_same_config_same_numbers_in_two_processes(tmp_path):
    """Two `train` processes, each building its own cache (Word2Vec included), give the same
    epoch-by-epoch metrics on this machine: a trial's numbers are a function of its config and seed."""
    args = ["--model", "gru", "--n-train", "240", "--n-test", "100", "--max-len", "64", "--embed-dim", "16",
            "--w2v-epochs", "1", "--epochs", "2", "--batch-size", "32", "--hidden", "16", "--quiet"]
    histories, procs = [], {}
    for run in ("a", "b"):  # at the same time (a stronger check than one after the other: other thread timings)
        env = {**os.environ, "MLFLOW_TRACKING_URI": fresh_store(tmp_path, f"{run}.db")}  # two stores: no migration race
        procs[run] = subprocess.Popen([sys.executable, "-m", "imdb_ray", "train", *args, "--run-dir", str(tmp_path / run),
                                       "--cache-dir", str(tmp_path / f"cache-{run}")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
    for run, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        history = json.loads((tmp_path / run / "metrics.json").read_text())["history"]
        histories.append([{k: v for k, v in h.items() if k not in ("epoch_seconds", "samples_per_second")} for h in history])
    assert histories[0] == histories[1] and len(histories[0]) == 2


def test_resume_matches_uninterrupted_run(tiny_cfg, small_imdb, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, epochs=3)
    full = train(cfg, dataset=small_imdb, progress=False)
    saved = {}

    def keep(metrics, ckpt):
        if metrics["epoch"] == 1:
            import shutil
            shutil.copytree(ckpt, tmp_path / "ckpt")
            saved["m"] = metrics

    train(dataclasses.replace(cfg, epochs=1), dataset=small_imdb, progress=False, on_epoch=keep)
    resumed = train(cfg, dataset=small_imdb, progress=False, resume_from=tmp_path / "ckpt")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)


def test_early_stopping_restores_best_epoch(tiny_cfg, small_imdb):
    cfg = dataclasses.replace(tiny_cfg, epochs=6, patience=1, lr=0.5, optimizer="sgd")
    result = train(cfg, dataset=small_imdb, progress=False)
    best = max(h["val_accuracy"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_accuracy"] == best
    assert result.val["val_accuracy"] == pytest.approx(best)


@pytest.mark.parametrize("metric", ["val_accuracy", "val_loss"])
def test_the_running_best_and_the_restored_epoch_follow_cfg_metric(tiny_cfg, small_imdb, metric):
    """What a sweep ranks on (best_<metric>, reported every epoch) and the weights a trial keeps both
    follow cfg.metric: a val_loss sweep restores its lowest-loss epoch, not its most accurate one."""
    cfg = dataclasses.replace(tiny_cfg, epochs=4, lr=0.05, metric=metric)
    result = train(cfg, dataset=small_imdb, progress=False)
    values = [h[metric] for h in result.history]
    pick = min if metric == "val_loss" else max
    assert [h[f"best_{metric}"] for h in result.history] == [pick(values[:i + 1]) for i in range(len(values))]
    assert [h["finished"] for h in result.history] == [False, False, False, True]
    assert values[result.best_epoch - 1] == pick(values)
    assert result.val[metric] == pytest.approx(pick(values), abs=1e-6)


def test_tfidf_baseline_runs_through_train(small_imdb, tmp_path):
    cfg = TrialConfig(model="tfidf_lr", cache_dir=str(tmp_path), model_args={"min_df": 1})
    result = train(cfg, dataset=small_imdb, evaluate_test=True, progress=False)
    assert result.test["test_accuracy"] > 0.6 and len(result.history) == 1


def test_unknown_model_and_parameter_are_refused():
    with pytest.raises(UserError, match="unknown model 'bert_large'; known models: attention_lstm"):
        TrialConfig.from_flat({"model": "bert_large"})
    with pytest.raises(UserError, match="model 'gru' has no parameter 'kernel_sizes'"):
        TrialConfig.from_flat({"model": "gru", "kernel_sizes": (3,)})
    assert TrialConfig.from_flat({"model": "gru", "kernel_sizes": (3,)}, strict=False).model_args == {}


def test_train_command_end_to_end(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--model", "cnn", "--n-train", "300", "--n-test", "200", "--epochs", "2",
                 "--max-len", "64", "--embed-dim", "16", "--num-filters", "8", "--kernel-sizes", "2,3",
                 "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "test_accuracy" in out
    config = json.loads((run / "config.json").read_text())
    assert config["model_args"] == {"num_filters": 8, "kernel_sizes": [2, 3]}
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]) == 2 and 0 <= metrics["summary"]["test_accuracy"] <= 1
    assert (run / "checkpoint" / "checkpoint.pt").exists()
    # resume a finished run: nothing left to train, same final metrics
    assert main(["train", "--model", "cnn", "--n-train", "300", "--n-test", "200", "--epochs", "2",
                 "--max-len", "64", "--embed-dim", "16", "--num-filters", "8", "--kernel-sizes", "2,3",
                 "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run), "--quiet", "--resume"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "nope"], "unknown model 'nope'"),
    (["train", "--model", "gru", "--kernel-sizes", "3"], "unknown option --kernel-sizes"),
    # a misspelt name: the nearest one (difflib), where one is near
    (["train", "--model", "lstmm"], "known models: attention_lstm, bert, capsule_lstm, cnn, cnn_lstm, deberta_v3, distilbert, gru, "
     "hf, lstm, modernbert, nbsvm, roberta, tfidf_lr, transformer; did you mean lstm?"),
    (["train", "--model", "gru", "--hiden", "8"], "unknown option --hiden; did you mean --hidden? (model 'gru' parameters:"),
    (["train", "--n_train", "500"], "unknown option --n_train; did you mean --n-train? (model 'gru' parameters:"),
    (["train", "--optimiser", "sgd"], "unknown option --optimiser; did you mean --optimizer?"),
    (["report", "--tracking-url", "sqlite:///m.db"], "unrecognized arguments: --tracking-url sqlite:///m.db; did you mean --tracking-uri?"),
    (["report", "--bogus"], "unrecognized arguments: --bogus (see --help)"),  # not "did you mean --verbose?": dashes aside
    (["swep"], "invalid choice: 'swep' (choose from 'train', 'models', 'sweep', 'predict', 'report', 'ui'); did you mean sweep?"),
    (["train", "--lr", "-1"], "lr=-1.0 must be a number > 0"),
    (["train", "--optimizer", "lion"], "optimizer='lion' must be one of adamw, sgd"),
    # a model flag's value that cannot be its type: argparse's line, naming the flag (not the parser function's repr)
    (["train", "--model", "cnn", "--kernel-sizes", "3,x"], "argument --kernel-sizes: expected numbers separated by commas (like 3,4,5), got '3,x'"),
    (["train", "--model", "gru", "--bidirectional", "maybe"], "argument --bidirectional: expected true/false, got 'maybe'"),
    (["train", "--amp", "maybe"], "argument --amp: expected true/false, got 'maybe'"),
    (["train", "--resume", "--run-dir", "/nonexistent/run"], "--resume: /nonexistent/run/checkpoint does not exist"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_errors_are_one_line_exit_2(argv, message, capsys):
    code, err, _ = cli(argv, capsys)
    assert code == 2
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("argv, message", [(["train", "--model", "nope"], "unknown model 'nope'"),
                                           (["frobnicate"], "invalid choice")])
def test_cli_errors_from_the_entry_point(argv, message):
    """The same through `python -m imdb_ray`: the exit code and a stderr with nothing else in it."""
    proc = subprocess.run([sys.executable, "-m", "imdb_ray", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_models_command_lists_parameters(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("cnn", "lstm", "gru", "transformer", "cnn_lstm", "attention_lstm", "capsule_lstm", "tfidf_lr"):
        assert name in out
    assert "--kernel-sizes" in out and "default (3, 4, 5)" in out
    assert main(["models", "gru", "roberta"]) == 0  # a model's entry alone (roberta's is the one of every HF name)
    only = capsys.readouterr().out
    assert only.startswith("bert, deberta_v3, distilbert, hf, modernbert, roberta  [hf]") and "\ngru  [word]" in only
    assert "--peft" in only and "--pooling" in only and "cnn" not in only
    assert set(only.splitlines()) < set(out.splitlines())
    assert main(["models", "grue"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: unknown model 'grue'; known models: attention_lstm, bert,") and error.endswith("; did you mean gru?")


@pytest.mark.parametrize("header", [True, False], ids=["word2vec_text", "glove"])
def test_vectors_file_through_keyedvectors(tiny_cfg, small_imdb, tmp_path, header):
    words = {"the": [1.0, 0.0, 0.0, 0.0], "movie": [0.0, 2.0, 0.0, 0.0], "bad": [0.0, 0.0, 3.0, 0.0]}
    path = tmp_path / ("vectors.txt" if header else "glove.txt")
    lines = ([f"{len(words)} 4"] if header else []) + [f"{w} {' '.join(map(str, v))}" for w, v in words.items()]
    path.write_text("\n".join(lines) + "\n")
    cfg = dataclasses.replace(tiny_cfg, embeddings=str(path), embed_dim=4).validate()
    data = prepare_word_data(cfg, small_imdb)
    for word, vec in words.items():
        assert data.vectors[data.vocab.index(word)].tolist() == vec
    assert data.vectors[PAD_ID].abs().sum() == 0 and 0.9 < data.oov_rate < 1.0
    frozen = train(dataclasses.replace(cfg, freeze_embeddings=True, epochs=1), dataset=small_imdb, progress=False)
    assert torch.equal(frozen.model.embedding.weight.detach(), data.vectors)  # frozen: unchanged by training


def test_a_vectors_file_row_of_another_width_is_refused_naming_the_row(tmp_path):
    """gensim trusts a text file's first row: a later row of one value was copied into every dimension. The early
    look (`train`, before the run folder) reads the first rows; reading the file checks every row."""
    from imdb_ray.embeddings import check_vectors_text, load_vectors

    rows = [f"w{i} 0.1 0.2 0.3" for i in range(1005)]
    rows[1002] = "w1002 0.5"
    path = tmp_path / "glove.txt"
    path.write_text("\n".join(rows) + "\n")
    assert check_vectors_text(path, limit=1000) is False  # no header; the first 1,000 rows are well formed
    with pytest.raises(UserError, match=r"glove.txt: line 1003 has 1 value\(s\) after its word, the file's vectors 3"):
        load_vectors(str(path))
    path.write_text("\n".join(rows[:2]) + "\n\n")  # a blank last line, which gensim reads as a row of no values
    with pytest.raises(UserError, match="glove.txt: line 3 is empty; every line must be a word and its 3 values"):
        load_vectors(str(path))
    path.write_text("3 3\n" + "\n".join(rows[:2]) + "\n")  # a header that promises more rows than there are
    with pytest.raises(UserError, match="not a word2vec, GloVe or gensim vectors file"):
        load_vectors(str(path))


@pytest.mark.parametrize("schedule, hf_name", [("constant", "constant_with_warmup"), ("linear", "linear"), ("cosine", "cosine")])
def test_lr_schedules_match_transformers_get_scheduler(schedule, hf_name):
    """The loop's schedules are transformers' formulas written out (importing transformers costs every word
    trial seconds of start-up): the same learning rate at every step, warmup included."""
    from transformers import get_scheduler

    from imdb_ray.train import build_scheduler

    def rates(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, out = make(optimizer), []
        for _ in range(50):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    cfg = TrialConfig(model="gru", schedule=schedule, warmup_ratio=0.1)
    ours = rates(lambda opt: build_scheduler(cfg, opt, total_steps=40))  # 10 steps past the end: stays at 0 (or 1)
    theirs = rates(lambda opt: get_scheduler(hf_name, opt, num_warmup_steps=4, num_training_steps=40))
    assert ours == pytest.approx(theirs, abs=1e-12) and len(set(ours)) > 2


def test_macro_f1_is_scikit_learns():
    """train's own macro F1 (it spares every trial process scikit-learn's import) gives scikit-learn's
    number: balanced and skewed labels, a class that is only predicted, one class only, three classes."""
    import numpy as np
    from sklearn.metrics import f1_score

    from imdb_ray.train import macro_f1

    rng = np.random.default_rng(0)
    cases = [(rng.integers(0, 2, 200), rng.integers(0, 2, 200)), (np.r_[np.zeros(95), np.ones(5)], np.zeros(100)),
             (np.zeros(50), np.r_[np.zeros(40), np.ones(10)]), (np.ones(30), np.ones(30)),
             (rng.integers(0, 3, 300), rng.integers(0, 3, 300))]
    for labels, predicted in cases:
        labels, predicted = labels.astype(np.int64), predicted.astype(np.int64)
        assert macro_f1(labels, predicted) == pytest.approx(f1_score(labels, predicted, average="macro", zero_division=0), abs=1e-12)


def test_a_trial_process_never_imports_scikit_learn(tiny_cfg):
    """A word-model trial whose splits are cached trains in a fresh process without importing scikit-learn
    (1.5 s per process); a baseline's builder imports it when it is asked for."""
    train(tiny_cfg, progress=False)  # here: fills the cache (splits, vectors, vocabulary) the process below reads
    code = ("import sys, json; from imdb_ray.config import TrialConfig; from imdb_ray.train import train; "
            "from imdb_ray.models import get_model; "
            f"train(TrialConfig(**json.loads({json.dumps(json.dumps(dataclasses.asdict(tiny_cfg)))})), progress=False); "
            "before = 'sklearn' in sys.modules; get_model('nbsvm').build(); print(json.dumps([before, 'sklearn' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [False, True]


@pytest.mark.parametrize("bucket", [True, False])
def test_ddp_ranks_share_the_train_split_in_as_many_steps(tiny_cfg, small_imdb, bucket):
    """make_loaders(shard=(rank, 2)): two DDP ranks train on the whole train split between them, each in as many
    steps, in length buckets (or, with bucket_by_length off, through torch's DistributedSampler)."""
    from collections import Counter

    from imdb_ray.train import make_loaders, reshuffle

    cfg = dataclasses.replace(tiny_cfg, bucket_by_length=bucket, val_split="random")

    def reviews(loader) -> tuple[int, Counter]:  # steps taken, and each review (its ids without padding)
        reshuffle(loader, 3)
        batches = list(loader)
        return len(batches), Counter(tuple(ids[:n].tolist()) for inputs, _ in batches
                                     for ids, n in zip(inputs["input_ids"], inputs["lengths"]))

    whole = reviews(make_loaders(cfg, small_imdb)[0]["train"])[1]
    shards = [make_loaders(cfg, small_imdb, shard=(rank, 2))[0]["train"] for rank in (0, 1)]
    (steps0, rows0), (steps1, rows1) = reviews(shards[0]), reviews(shards[1])
    assert steps0 == steps1 == len(shards[0]) == len(shards[1]) > 0
    together = rows0 + rows1
    assert set(together) == set(whole) and together.total() - whole.total() <= cfg.batch_size  # a padded batch at most
    assert (shards[1].batch_sampler.rank if bucket else shards[1].sampler.rank) == 1


def test_an_epoch_checkpoint_folder_left_by_a_killed_process_is_removed_by_the_next(tmp_path, monkeypatch):
    """A process SIGKILLed while its host takes an epoch's checkpoint (a Ray Train worker mid-report) cannot remove
    the folder; the next epoch folder made on the host does, and leaves those of running processes and other hosts."""
    import signal
    import socket
    import tempfile

    from imdb_ray.checkpoint import epoch_checkpoint_folder

    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom imdb_ray.checkpoint import epoch_checkpoint_folder\n"
                               "with epoch_checkpoint_folder() as folder:\n    print(folder, flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    left = Path(holder.stdout.readline().strip())
    (left / "checkpoint.pt").write_bytes(b"an epoch's tensors")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert left.is_dir() and left.parent == tmp_path
    running = tmp_path / f"imdb_ray_ckpt_{socket.gethostname()}_{os.getpid()}_abc"  # this process: still running
    elsewhere = tmp_path / f"imdb_ray_ckpt_another-host_{holder.pid}_abc"  # its process ids are not this host's
    running.mkdir(), elsewhere.mkdir()

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with epoch_checkpoint_folder() as folder:
        assert Path(folder).name.startswith(f"imdb_ray_ckpt_{socket.gethostname()}_{os.getpid()}_")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, elsewhere.name, Path(folder).name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, elsewhere.name])


@pytest.mark.parametrize("family", ["word", "hf"])
def test_evaluation_runs_in_length_order_and_gives_predictions_in_split_order(tiny_cfg, small_imdb, family):
    """Validation and test batches hold rows of similar lengths (longest first); each row's probability comes back
    at its place in the split, the same as a pass in split order gives, with the same metrics."""
    from torch.utils.data import DataLoader

    from imdb_ray.models import build_model
    from imdb_ray.train import evaluate, make_loaders

    cfg = dataclasses.replace(tiny_cfg, batch_size=8, max_len=512)  # long enough that reviews differ in length
    if family == "hf":
        cfg = dataclasses.replace(cfg, model="hf", model_args={"checkpoint": str(MINILM)}, max_len=256)
    loaders, build_args, _ = make_loaders(cfg, small_imdb)
    model = build_model(cfg, build_args)
    for split in ("val", "test"):
        loader = loaders[split]
        widths = [batch[0]["input_ids"].shape[1] for batch in loader]
        assert widths == sorted(widths, reverse=True) and len(widths) > 1
        in_split_order = DataLoader(loader.dataset, batch_size=cfg.batch_size, collate_fn=cfg.family.collate)
        assert sum(b[0]["input_ids"].numel() for b in loader) < sum(b[0]["input_ids"].numel() for b in in_split_order)
        (sorted_metrics, sorted_probs), (plain_metrics, plain_probs) = (
            evaluate(model, each, torch.device("cpu"), split) for each in (loader, in_split_order))
        np.testing.assert_allclose(sorted_probs, plain_probs, atol=1e-5)
        assert sorted_metrics[f"{split}_accuracy"] == plain_metrics[f"{split}_accuracy"]
        assert sorted_metrics[f"{split}_loss"] == pytest.approx(plain_metrics[f"{split}_loss"], rel=1e-5)


def test_the_progress_bar_in_a_log_is_redrawn_at_its_interval_not_every_step(tiny_cfg, small_imdb, capsys):
    """Where stderr is a file or pipe (a log, nohup, a batch job), each redraw of the epoch's bar is one more line in
    the log: it was redrawn at every step (the loss in its postfix forced it), epoch 1's bar 31 times here."""
    train(dataclasses.replace(tiny_cfg, epochs=2, batch_size=8), dataset=small_imdb, progress=True)
    drawn = capsys.readouterr().err.count("gru epoch 1/2")
    assert 1 <= drawn <= 3, drawn  # opened, perhaps one redraw, closed


def test_a_training_step_reads_one_number_back_from_the_device(tiny_cfg, small_imdb):
    """The loop waits for the device once a step (the loss, checked before the step): the loss parts (R-Drop's KL,
    here) are summed where they are and read once an epoch, so on a GPU the next batch is queued while the step
    runs; an evaluation keeps its logits there and copies them back once. Counted as the host reads of tensors
    (item, float, bool, int, cpu) that the loop's own code makes."""
    import collections

    from torch.overrides import TorchFunctionMode

    import imdb_ray.train as loop

    class HostReads(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.counts = collections.Counter()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            caller = sys._getframe(1).f_code  # train() itself, or a comprehension in it (a frame of its own before 3.12)
            if (func.__name__ in ("item", "__float__", "__bool__", "__int__", "cpu") and caller.co_filename == loop.__file__
                    and caller.co_name in ("train", "<dictcomp>", "evaluate")):
                self.counts[caller.co_name.replace("<dictcomp>", "train"), func.__name__] += 1
            return func(*args, **(kwargs or {}))

    cfg = dataclasses.replace(tiny_cfg, rdrop_alpha=0.5, batch_size=8)
    loaders = loop.make_loaders(cfg, small_imdb)[0]
    steps = len(loaders["train"])
    assert len(loaders["val"]) > 1  # several validation batches, one copy back
    with HostReads() as reads:
        history = train(cfg, dataset=small_imdb, progress=False).history
    parts = [k for k in history[0] if k.startswith("train_") and k != "train_loss"]  # R-Drop's: cross-entropy and KL
    assert parts == ["train_ce", "train_kl"] and all(h["train_kl"] > 0 for h in history)
    evaluations = cfg.epochs + 1  # validation after each epoch, and of the restored best epoch
    assert reads.counts == {("train", "item"): steps * cfg.epochs, ("train", "__float__"): len(parts) * cfg.epochs,
                            ("evaluate", "cpu"): evaluations, ("evaluate", "item"): evaluations}, (reads.counts, steps)
