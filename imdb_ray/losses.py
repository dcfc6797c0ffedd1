"""Training losses. The loop calls `loss_fn(model, inputs, labels)` and gets the total loss plus its
named components (logged separately per epoch)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_loss(model, inputs: dict[str, torch.Tensor], labels: torch.Tensor):
    logits, _ = model(**inputs)
    loss = F.cross_entropy(logits, labels)
    return loss, {"ce": loss.detach()}


def build_loss(cfg):
    """The loss a config asks for (strategies compose here, never in the loop)."""
    return cross_entropy_loss
