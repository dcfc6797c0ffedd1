"""R-Drop and SupCon against hand computations, edge cases, gradients, and end to end."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from imdb_ray.config import TrialConfig
from imdb_ray.losses import build_loss, supcon_loss, symmetric_kl
from imdb_ray.train import train


def test_symmetric_kl_by_hand_and_symmetric():
    a = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    b = torch.tensor([[0.0, 0.0]])  # q = (1/2, 1/2)
    p, q = torch.tensor([0.25, 0.75]), torch.tensor([0.5, 0.5])
    expected = 0.5 * ((p * (p / q).log()).sum() + (q * (q / p).log()).sum())
    assert symmetric_kl(a, b).item() == pytest.approx(expected.item(), rel=1e-6)
    x, y = torch.randn(5, 2), torch.randn(5, 2)
    assert symmetric_kl(x, y).item() == pytest.approx(symmetric_kl(y, x).item(), rel=1e-6)
    assert symmetric_kl(x, x).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_is_a_batch_mean_so_alpha_does_not_scale_with_batch_size():
    x, y = torch.randn(4, 2), torch.randn(4, 2)
    assert symmetric_kl(x.repeat(8, 1), y.repeat(8, 1)).item() == pytest.approx(symmetric_kl(x, y).item(), rel=1e-5)


def _supcon_reference(features, labels, tau):
    z = F.normalize(features, dim=-1)
    losses = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / tau) for a in others)
        losses.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / denom) for p in positives) / len(positives))
    return sum(losses) / len(losses)


def test_supcon_matches_direct_reference():
    torch.manual_seed(0)
    features, labels = torch.randn(7, 5), torch.tensor([0, 1, 0, 1, 1, 0, 2])  # label 2 has no positive
    for tau in (0.07, 0.5, 1.0):
        assert supcon_loss(features, labels, tau).item() == pytest.approx(_supcon_reference(features, labels, tau), rel=1e-5)


@pytest.mark.parametrize("labels", [torch.tensor([0]), torch.tensor([0, 1]), torch.tensor([1, 1, 1, 1])])
def test_supcon_edge_batches_are_finite(labels):
    features = torch.randn(len(labels), 4, requires_grad=True)
    loss = supcon_loss(features, labels, 0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()
    if len(set(labels.tolist())) == len(labels):
        assert loss.item() == 0.0  # no anchor has a positive
    else:
        assert loss.item() > 0  # one class: every other example is a positive


def test_supcon_gradient_reaches_features():
    features = torch.randn(6, 4, requires_grad=True)
    supcon_loss(features, torch.tensor([0, 0, 1, 1, 0, 1]), 0.2).backward()
    assert features.grad.abs().sum() > 0


class _Toy(torch.nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        self.lin, self.drop = torch.nn.Linear(4, 2), torch.nn.Dropout(p)

    def forward(self, x):
        h = self.drop(x)
        return self.lin(h), h


def test_alpha_zero_is_plain_cross_entropy():
    model, x, y = _Toy(0.0), torch.randn(8, 4), torch.randint(0, 2, (8,))
    loss, parts = build_loss(TrialConfig())(model, {"x": x}, y)
    assert loss.item() == pytest.approx(F.cross_entropy(model(x)[0], y).item(), rel=1e-6)
    assert set(parts) == {"ce"}


def test_rdrop_uses_two_different_dropout_masks_and_composes_with_supcon():
    torch.manual_seed(0)
    model, x, y = _Toy(0.5), torch.randn(16, 4), torch.randint(0, 2, (16,))
    cfg = TrialConfig(rdrop_alpha=1.0, supcon_weight=0.5, supcon_tau=0.2)
    loss, parts = build_loss(cfg)(model, {"x": x}, y)
    assert parts["kl"] > 0  # the two passes differ
    assert loss.item() == pytest.approx((parts["ce"] + 1.0 * parts["kl"] + 0.5 * parts["supcon"]).item(), rel=1e-5)
    assert cfg.strategy == "rdrop+supcon" and TrialConfig().strategy == "ce"


@pytest.mark.parametrize("strategy", [{"rdrop_alpha": 1.0}, {"supcon_weight": 0.3, "supcon_tau": 0.2}])
def test_strategies_end_to_end_with_a_classic_model(tiny_cfg, small_imdb, strategy):
    result = train(dataclasses.replace(tiny_cfg, **strategy), dataset=small_imdb, progress=False)
    key = "train_kl" if "rdrop_alpha" in strategy else "train_supcon"
    assert all(key in h and math.isfinite(h[key]) for h in result.history)


def test_strategies_compose_with_a_tiny_hf_model_and_lora(tiny_checkpoints, small_imdb, tmp_path):
    cfg = TrialConfig(model="hf", model_args={"checkpoint": tiny_checkpoints["bert"], "peft": "lora"}, n_train=48,
                      n_test=16, max_len=32, batch_size=8, epochs=1, cache_dir=str(tmp_path / "cache"),
                      rdrop_alpha=0.5, supcon_weight=0.2, supcon_tau=0.1)
    h = train(cfg, dataset=small_imdb, progress=False).history[0]
    assert h["train_kl"] > 0 and math.isfinite(h["train_supcon"])
    assert h["train_loss"] == pytest.approx(h["train_ce"] + 0.5 * h["train_kl"] + 0.2 * h["train_supcon"], rel=1e-4)
