"""Model bundles and `predict`: a saved model scores raw texts exactly as the evaluation that
measured it did (same cleaning, tokenisation, truncation and weights)."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch

from imdb_ray.__main__ import main
from imdb_ray.bundle import Predictor, save_bundle
from imdb_ray.errors import UserError
from imdb_ray.train import evaluate, make_loaders, train

from conftest import MINILM


def _same_probs_as_evaluation(result, cfg, dataset, folder):
    save_bundle(result.model, cfg, folder, result.vocab)
    loaders, _, _ = make_loaders(cfg, dataset)
    _, expected = evaluate(result.model, loaders["test"], torch.device("cpu"), "test")
    raw_texts = dataset.test.texts  # already cleaned by load_dataset; cleaning twice is a no-op
    got = Predictor(folder).predict_proba(raw_texts, batch_size=8)  # batches of similar lengths, back in text order
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_word_model_bundle_reproduces_evaluation(tiny_cfg, small_imdb, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, freeze_embeddings=True, epochs=1)
    result = train(cfg, dataset=small_imdb, progress=False)
    _same_probs_as_evaluation(result, cfg, small_imdb, tmp_path / "model")
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"config.json", "weights.pt", "vocab.json"}


def test_hf_lora_bundle_reproduces_evaluation(small_imdb, tmp_path, monkeypatch):
    import json

    from imdb_ray.config import TrialConfig

    cfg = TrialConfig(model="hf", model_args={"checkpoint": str(MINILM), "peft": "lora", "lora_r": 4}, n_train=48,
                      n_test=16, max_len=32, batch_size=8, epochs=1, lr=1e-3, cache_dir=str(tmp_path / "cache"))
    result = train(cfg, dataset=small_imdb, progress=False)
    _same_probs_as_evaluation(result, cfg, small_imdb, tmp_path / "model")
    weights = torch.load(tmp_path / "model" / "weights.pt", weights_only=True)["trainable"]
    assert weights and all("lora_" in k or "classifier" in k for k in weights)  # the frozen base is not copied
    # the base is read again from its checkpoint: a hub name not on this machine, and nothing answers at the hub
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["model_args"]["checkpoint"] = "imdb-ray-tests/never-downloaded"
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE", "http://127.0.0.1:9/{repo_id}/resolve/{revision}/{filename}")
    with pytest.raises(UserError, match=r"'imdb-ray-tests/never-downloaded' is not on this machine and the Hugging Face hub "
                                        r"\(http://127.0.0.1:9\) cannot be reached"):
        Predictor(tmp_path / "model")


def test_train_then_predict_from_the_command_line(tiny_cfg, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    assert main(["train", "--model", "cnn", "--n-train", "240", "--n-test", "100", "--max-len", "64", "--embed-dim", "16",
                 "--w2v-epochs", "1", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(run_dir),
                 "--num-filters", "8", "--quiet"]) == 0
    assert (run_dir / "model" / "weights.pt").is_file()
    capsys.readouterr()
    assert main(["predict", str(run_dir), "A wonderful, moving film.", "Dull and far too long."]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        label, prob, text = line.split("\t")
        assert label in ("positive", "negative") and 0.5 <= float(prob) <= 1 and text
    texts = tmp_path / "reviews.txt"
    texts.write_text("great\n\nawful\n")
    assert main(["predict", str(run_dir), "--file", str(texts)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3  # the empty line is a row too (tests/test_predict_files.py)
    monkeypatch.setattr("sys.stdin", io.StringIO("loved it\n"))
    assert main(["predict", str(run_dir / "model")]) == 0
    assert capsys.readouterr().out.count("\t") == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("loved it\nhated it\n"))  # `--file -`: stdin, as Unix tools read it
    assert main(["predict", str(run_dir / "model"), "--file", "-"]) == 0
    assert capsys.readouterr().out.count("\t") == 4


def test_not_a_model_folder(tmp_path):
    with pytest.raises(UserError, match="not a model folder"):
        Predictor(tmp_path)


def test_a_bundle_config_of_the_wrong_type_is_one_line(tiny_cfg, small_imdb, tmp_path):
    import json

    result = train(tiny_cfg, dataset=small_imdb, progress=False)
    folder = save_bundle(result.model, tiny_cfg, tmp_path / "model", result.vocab)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_len": "256"}))
    with pytest.raises(UserError, match=r"config.json: not a config this version can load \(max_len='256' must be an integer > 0\)"):
        Predictor(folder)
    (folder / "config.json").write_text(json.dumps({**config, "colour": "red"}))
    with pytest.raises(UserError, match="not a config this version can load"):
        Predictor(folder)
