"""Training losses. The loop calls `loss_fn(model, inputs, labels)` and gets the total loss plus its
named components (logged separately per epoch). Strategies compose here, never in the loop:

- cross-entropy, always;
- R-Drop (`rdrop_alpha` > 0): two forward passes with independent dropout masks, mean of their
  cross-entropies + alpha x symmetric KL between their predictions, averaged per example;
- SupCon (`supcon_weight` > 0): supervised contrastive loss on the L2-normalised pooled features.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from imdb_ray.config import TrialConfig

LossFn = Callable[[torch.nn.Module, dict, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """0.5 * (KL(p_a || p_b) + KL(p_b || p_a)), summed over classes, averaged over the batch."""
    log_a, log_b = F.log_softmax(logits_a, -1), F.log_softmax(logits_b, -1)
    kl_ab = (log_a.exp() * (log_a - log_b)).sum(-1)
    kl_ba = (log_b.exp() * (log_b - log_a)).sum(-1)
    return 0.5 * (kl_ab + kl_ba).mean()


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out), on L2-normalised features.

    For anchor i, positives are the other examples with its label; the denominator runs over every
    other example. Anchors without a positive are left out; a batch where no anchor has one (one
    example, or all labels distinct) gives 0, still connected to the graph.
    """
    z = F.normalize(features.float(), dim=-1)
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = (z @ z.T / tau).masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    counts = positives.sum(1)
    has_pos = counts > 0
    if not has_pos.any():
        return features.sum() * 0.0
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1)[has_pos] / counts[has_pos]
    return per_anchor.mean()


def build_loss(cfg: TrialConfig) -> LossFn:
    """The loss `cfg` asks for: cross-entropy, plus R-Drop and/or SupCon terms."""
    alpha, weight, tau = cfg.rdrop_alpha, cfg.supcon_weight, cfg.supcon_tau

    def loss_fn(model, inputs: dict, labels: torch.Tensor):
        passes = [model(**inputs) for _ in range(2 if alpha > 0 else 1)]  # each pass draws its own dropout
        ce = torch.stack([F.cross_entropy(logits, labels) for logits, _ in passes]).mean()
        total, parts = ce, {"ce": ce.detach()}
        if alpha > 0:
            kl = symmetric_kl(passes[0][0], passes[1][0])
            total = total + alpha * kl
            parts["kl"] = kl.detach()
        if weight > 0:
            sc = torch.stack([supcon_loss(features, labels, tau) for _, features in passes]).mean()
            total = total + weight * sc
            parts["supcon"] = sc.detach()
        return total, parts

    return loss_fn
