"""Every registered neural model: shapes, gradients, padding invariance, and it can fit real reviews."""
from __future__ import annotations

import pytest
import torch

from imdb_ray.models import get_model, list_models
from imdb_ray.text import build_vocab, encode, tokenize

NEURAL = [m.name for m in list_models() if m.family == "word"]
SMALL = {"cnn": {"num_filters": 16}, "lstm": {"hidden": 16}, "gru": {"hidden": 16},
         "transformer": {"d_model": 32, "ff_dim": 64, "layers": 1}, "cnn_lstm": {"num_filters": 16, "hidden": 16},
         "attention_lstm": {"hidden": 16, "attention_dim": 16}, "capsule_lstm": {"hidden": 16, "num_capsules": 4, "capsule_dim": 8}}


def test_all_seven_classic_models_registered():
    assert set(NEURAL) == {"cnn", "lstm", "gru", "transformer", "cnn_lstm", "attention_lstm", "capsule_lstm"}
    assert get_model("tfidf_lr").family == get_model("nbsvm").family == "baseline"


def test_nbsvm_folds_the_log_count_ratio_into_a_plain_linear_model():
    """NB-LR fits logistic regression on r-scaled binary features; the fitted weights, folded with r,
    give the same probabilities on the unscaled features (so a bundle holds a plain linear model)."""
    import numpy as np
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    from imdb_ray.models.nb_logistic import NBLogisticRegression

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    X = csr_matrix((rng.random((200, 30)) < np.where(y[:, None] == 1, 0.3, 0.1) * np.linspace(0.5, 1.5, 30)).astype(float))
    nb = NBLogisticRegression(C=0.5, alpha=1.0).fit(X, y)
    p, q = 1 + X[y == 1].sum(0).A1, 1 + X[y == 0].sum(0).A1
    r = np.log((p / p.sum()) / (q / q.sum()))
    plain = LogisticRegression(C=0.5, max_iter=1000).fit(X.multiply(r).tocsr(), y)
    assert np.allclose(nb.predict_proba(X), plain.predict_proba(X.multiply(r).tocsr()), atol=1e-6)
    assert np.allclose(nb.coef_, plain.coef_ * r, atol=1e-6)


def _model(name, vocab_size=50, dim=12, **extra):
    torch.manual_seed(0)
    return get_model(name).build(torch.randn(vocab_size, dim), **{**SMALL[name], **extra})


@pytest.mark.parametrize("name", NEURAL)
def test_shapes_and_backward(name):
    model = _model(name)
    ids = torch.randint(2, 50, (5, 9))
    lengths = torch.tensor([9, 4, 1, 7, 2])
    logits, features = model(ids, lengths)
    assert logits.shape == (5, 2)
    assert features.shape == (5, model.feature_dim)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", NEURAL)
def test_padding_invariance(name):
    """The same review with more trailing padding gives the same logits (no pooling over padding)."""
    model = _model(name).eval()
    ids = torch.randint(2, 50, (3, 10))
    lengths = torch.tensor([10, 6, 3])
    for row, n in enumerate(lengths):
        ids[row, n:] = 0
    padded = torch.cat([ids, torch.zeros(3, 15, dtype=torch.long)], dim=1)
    with torch.no_grad():
        a, fa = model(ids, lengths)
        b, fb = model(padded, lengths)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fa, fb, atol=1e-5, rtol=1e-4)


def test_transformer_takes_texts_of_any_length():
    """Its sinusoidal positions are computed for the length at hand (a 4,096-row table failed past it)."""
    model = _model("transformer").eval()
    with torch.no_grad():
        logits, _ = model(torch.randint(2, 50, (1, 5000)), torch.tensor([5000]))
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()
    assert not list(model.buffers())  # nothing position-sized is kept or saved


@pytest.mark.parametrize("name", NEURAL)
def test_overfits_64_real_reviews(name, small_imdb):
    torch.manual_seed(0)
    texts, labels = small_imdb.train.texts[:64], torch.from_numpy(small_imdb.train.labels[:64])
    tokens = [tokenize(t) for t in texts]
    vocab = build_vocab(tokens, min_freq=1)
    ids, lengths = encode(tokens, vocab, max_len=96)
    model = get_model(name).build(torch.randn(len(vocab), 32) * 0.3, **SMALL[name], dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(60):
        for batch in torch.arange(64).split(32):
            logits, _ = model(ids[batch], lengths[batch])
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(ids, lengths)[0].argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95, f"{name} reached only {accuracy:.2f} training accuracy"
