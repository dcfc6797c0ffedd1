"""The seven classic models on word vectors. Each one:

- takes `(input_ids, lengths)` with right padding (`<pad>` = id 0) and returns `(logits, features)`,
  where `features` is the pooled vector the classifier reads (SupCon uses it);
- never lets padding reach the features: RNNs read each row only up to its length (the backward
  direction runs over the row reversed within its length), pooling and attention are
  masked, convolutions only keep windows that start on a real token.

Adding a model: one class with `@register_model`, its tunable knobs as keyword-only arguments.
"""
from __future__ import annotations

import math

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from imdb_ray.contracts import Dropout, Positive, Positives
from imdb_ray.errors import UserError
from imdb_ray.models.registry import register_model


class WordClassifier(nn.Module):
    """Embedding (initialised from word vectors) -> `encode` -> dropout -> linear head."""

    feature_dim: int

    def __init__(self, vectors: torch.Tensor, num_classes: int = 2, freeze_embeddings: bool = False, dropout: float = 0.3):
        super().__init__()
        vectors = vectors.detach().float().clone()
        vectors[0] = 0.0  # <pad> is a zero vector (padding_idx then keeps it zero): convolutions rely on it
        self.embedding = nn.Embedding.from_pretrained(vectors, freeze=freeze_embeddings, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.num_classes = num_classes

    def build_head(self, feature_dim: int) -> None:
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, self.num_classes)

    # Subclasses define encode(emb (B, T, D), lengths (B,)) -> features (B, feature_dim).

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.dropout(self.embedding(input_ids))
        features = self.encode(emb, lengths)
        return self.head(self.dropout(features)), features


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) bool, True on real tokens."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).max(1).values


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `length` steps in place, leaving its padding at the end."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]
    src = lengths[:, None] - 1 - steps
    src = torch.where(src >= 0, src, steps)  # padding positions map to themselves
    return x.gather(1, src.unsqueeze(-1).expand_as(x))


class MaskedRNN(nn.Module):
    """Multi-layer (bi)directional LSTM/GRU that is exactly blind to right padding.

    The forward direction is causal, so trailing padding cannot reach real steps; the backward
    direction runs forwards over each row reversed within its length. Same result as packed
    sequences, about 4x faster on CPU (packing defeats the fused kernels).
    """

    def __init__(self, cell: type[nn.RNNBase], input_size: int, hidden: int, layers: int = 1,
                 bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        self.bidirectional = bidirectional
        self.output_dim = hidden * (2 if bidirectional else 1)
        sizes = [input_size] + [self.output_dim] * (layers - 1)
        self.forward_rnns = nn.ModuleList(cell(n, hidden, batch_first=True) for n in sizes)
        self.backward_rnns = nn.ModuleList(cell(n, hidden, batch_first=True) for n in sizes) if bidirectional else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs (B, T, H*dirs) zeroed on padding, last states (B, H*dirs) of the top layer)."""
        rows = torch.arange(x.shape[0], device=x.device)
        for i, rnn in enumerate(self.forward_rnns):
            if i > 0:
                x = self.dropout(x)
            out, _ = rnn(x)
            last = out[rows, lengths - 1]
            if self.bidirectional:
                back, _ = self.backward_rnns[i](reverse_padded(x, lengths))
                last = torch.cat([last, back[rows, lengths - 1]], -1)  # backward pass ends at position 0
                out = torch.cat([out, reverse_padded(back, lengths)], -1)
            x = out
        return x * padding_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype), last


@register_model("cnn")
class TextCNN(WordClassifier):
    """Kim-style TextCNN: parallel convolutions, max over time of windows that start on real tokens."""

    def __init__(self, vectors, num_classes=2, freeze_embeddings=False, *,
                 kernel_sizes: Positives = (3, 4, 5), num_filters: Positive = 100, dropout: Dropout = 0.5):
        super().__init__(vectors, num_classes, freeze_embeddings, dropout)
        dim = vectors.shape[1]
        self.convs = nn.ModuleList(nn.Conv1d(dim, num_filters, k) for k in kernel_sizes)
        self.build_head(num_filters * len(kernel_sizes))

    def encode(self, emb, lengths):
        mask = padding_mask(lengths, emb.shape[1])
        x = emb.transpose(1, 2)  # (B, D, T)
        pooled = []
        for conv in self.convs:
            # Right-pad by k-1 zeros so every real start position has a full window; the
            # windows past the text read zero vectors however much padding the batch has.
            y = F.relu(conv(F.pad(x, (0, conv.kernel_size[0] - 1)))).transpose(1, 2)  # (B, T, F)
            pooled.append(masked_max(y, mask))
        return torch.cat(pooled, dim=-1)


class RNNClassifier(WordClassifier):
    cell: type[nn.RNNBase]

    def __init__(self, vectors, num_classes=2, freeze_embeddings=False, *, hidden: Positive = 128, layers: Positive = 1,
                 bidirectional: bool = True, pooling: Literal["last", "mean", "max"] = "last", dropout: Dropout = 0.3):
        super().__init__(vectors, num_classes, freeze_embeddings, dropout)
        self.pooling = pooling
        self.rnn = MaskedRNN(self.cell, vectors.shape[1], hidden, layers, bidirectional, dropout)
        self.build_head(hidden * (2 if bidirectional else 1))

    def encode(self, emb, lengths):
        out, last = self.rnn(emb, lengths)
        if self.pooling == "last":
            return last
        mask = padding_mask(lengths, emb.shape[1])
        return masked_mean(out, mask) if self.pooling == "mean" else masked_max(out, mask)


@register_model("lstm")
class LSTMClassifier(RNNClassifier):
    """(Bi)LSTM, blind to padding; pooling: final state, masked mean or masked max."""

    cell = nn.LSTM


@register_model("gru")
class GRUClassifier(RNNClassifier):
    """(Bi)GRU, blind to padding; pooling: final state, masked mean or masked max."""

    cell = nn.GRU


class PositionalEncoding(nn.Module):
    """Sinusoidal positions, computed for the length at hand (length x dim, little beside the layers): no table for
    a longer text to outgrow (a 4,096-row one failed on longer texts at a larger max_len) and nothing to save."""

    def forward(self, x):
        length, dim = x.shape[1], x.shape[2]
        pos = torch.arange(length, device=x.device).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2, device=x.device) * (-math.log(10000.0) / dim))
        pe = torch.zeros(length, dim, device=x.device)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
        return x + pe


@register_model("transformer")
class TransformerClassifier(WordClassifier):
    """Transformer encoder: projection to d_model, sinusoidal positions, key-padding mask, mean or [CLS] pooling."""

    def __init__(self, vectors, num_classes=2, freeze_embeddings=False, *, d_model: Positive = 128, heads: Positive = 4,
                 layers: Positive = 2, ff_dim: Positive = 256, pooling: Literal["mean", "first"] = "mean", dropout: Dropout = 0.1):
        super().__init__(vectors, num_classes, freeze_embeddings, dropout)
        self.pooling = pooling
        self.project = nn.Linear(vectors.shape[1], d_model)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model))
        self.positions = PositionalEncoding()
        layer = nn.TransformerEncoderLayer(d_model, heads, ff_dim, dropout, batch_first=True, norm_first=True)
        # enable_nested_tensor=False: the nested fast path drops padded rows and changes numerics.
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.build_head(d_model)

    @staticmethod
    def validate_args(*, d_model: int, heads: int, **_) -> None:
        if d_model % heads:
            raise UserError(f"d_model={d_model} must be a multiple of heads={heads} (each head gets d_model / heads dimensions)")

    def encode(self, emb, lengths):
        x = self.project(emb)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # learned [CLS] at position 0
        x = self.positions(x)
        mask = padding_mask(lengths + 1, x.shape[1])
        x = self.norm(self.encoder(x, src_key_padding_mask=~mask))
        return x[:, 0] if self.pooling == "first" else masked_mean(x[:, 1:], mask[:, 1:])


@register_model("cnn_lstm")
class CNNLSTMClassifier(WordClassifier):
    """Convolution over time (same length), then a (Bi)LSTM over the convolved sequence."""

    def __init__(self, vectors, num_classes=2, freeze_embeddings=False, *, num_filters: Positive = 128,
                 kernel_size: Positive = 3, hidden: Positive = 128, bidirectional: bool = True, dropout: Dropout = 0.3):
        super().__init__(vectors, num_classes, freeze_embeddings, dropout)
        self.conv = nn.Conv1d(vectors.shape[1], num_filters, kernel_size, padding=kernel_size // 2)
        self.rnn = MaskedRNN(nn.LSTM, num_filters, hidden, bidirectional=bidirectional)
        self.build_head(hidden * (2 if bidirectional else 1))

    @staticmethod
    def validate_args(*, kernel_size: int, **_) -> None:
        if kernel_size % 2 == 0:
            raise UserError(f"kernel_size={kernel_size} must be odd, so the convolution keeps the sequence length")

    def encode(self, emb, lengths):
        x = F.relu(self.conv(emb.transpose(1, 2))).transpose(1, 2)
        _, last = self.rnn(x, lengths)  # the convolved padding positions never reach the LSTM state
        return last


@register_model("attention_lstm")
class AttentionLSTMClassifier(WordClassifier):
    """BiLSTM with additive attention over time steps (softmax over time, padding masked)."""

    def __init__(self, vectors, num_classes=2, freeze_embeddings=False, *, hidden: Positive = 128,
                 attention_dim: Positive = 128, dropout: Dropout = 0.3):
        super().__init__(vectors, num_classes, freeze_embeddings, dropout)
        self.rnn = MaskedRNN(nn.LSTM, vectors.shape[1], hidden)
        self.score = nn.Sequential(nn.Linear(2 * hidden, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1, bias=False))
        self.build_head(2 * hidden)

    def encode(self, emb, lengths):
        out, _ = self.rnn(emb, lengths)
        mask = padding_mask(lengths, emb.shape[1])
        scores = self.score(out).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)  # over time, per example (the original used the batch axis)
        return torch.einsum("bt,bth->bh", weights, out)


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """Capsule non-linearity: keeps direction, maps length to |s|^2 / (1 + |s|^2) < 1."""
    sq = (s * s).sum(dim, keepdim=True)
    return (sq / (1.0 + sq)) * s / torch.sqrt(sq + eps)


@register_model("capsule_lstm")
class CapsuleLSTMClassifier(WordClassifier):
    """BiLSTM states as primary capsules, dynamic routing (Sabour et al.) to output capsules; padding never routes."""

    def __init__(self, vectors, num_classes=2, freeze_embeddings=False, *, hidden: Positive = 128, num_capsules: Positive = 10,
                 capsule_dim: Positive = 16, routings: Positive = 3, dropout: Dropout = 0.3):
        super().__init__(vectors, num_classes, freeze_embeddings, dropout)
        self.rnn = MaskedRNN(nn.LSTM, vectors.shape[1], hidden)
        self.num_capsules, self.capsule_dim, self.routings = num_capsules, capsule_dim, routings
        self.transform = nn.Linear(2 * hidden, num_capsules * capsule_dim, bias=False)  # shared W_ij
        self.build_head(num_capsules * capsule_dim)

    def encode(self, emb, lengths):
        out, _ = self.rnn(emb, lengths)
        B, T, _ = out.shape
        u_hat = self.transform(out).view(B, T, self.num_capsules, self.capsule_dim)
        mask = padding_mask(lengths, T).unsqueeze(-1).to(u_hat.dtype)  # (B, T, 1)
        logits = torch.zeros(B, T, self.num_capsules, device=out.device, dtype=u_hat.dtype)
        for i in range(self.routings):
            coupling = torch.softmax(logits, dim=2) * mask  # each input capsule splits over outputs
            v = squash(torch.einsum("btc,btcd->bcd", coupling, u_hat))  # (B, C, D)
            if i < self.routings - 1:
                logits = logits + torch.einsum("btcd,bcd->btc", u_hat, v)
        return v.reshape(B, -1)
