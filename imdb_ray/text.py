"""Word pipeline: tokenizer, vocabulary, fixed-length encoding with true lengths, and the
cached `prepare_word_data` that turns a TrialConfig into tensors plus an embedding matrix."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

import torch

from imdb_ray.cache import cache_key, load_or_build
from imdb_ray.data import Dataset, Split

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with contractions kept whole) plus ! and ?, which carry sentiment."""
    return _TOKEN.findall(text.lower())


def build_vocab(token_lists: Iterable[list[str]], min_freq: int = 2, max_size: int = 50_000) -> list[str]:
    """Most frequent words first, ties broken alphabetically (deterministic); ids 0/1 are pad/unk."""
    counts = Counter(tok for toks in token_lists for tok in toks)
    words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
    return [PAD, UNK] + words[: max_size - 2]


def encode(token_lists: list[list[str]], vocab: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N, max_len) right-padded with 0, lengths (N,) >= 1). Long texts keep their head."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = torch.zeros(len(token_lists), max_len, dtype=torch.long)
    lengths = torch.ones(len(token_lists), dtype=torch.long)
    for row, toks in enumerate(token_lists):
        seq = [index.get(t, UNK_ID) for t in toks[:max_len]] or [UNK_ID]  # an all-punctuation text is one <unk>
        ids[row, : len(seq)] = torch.tensor(seq)
        lengths[row] = len(seq)
    return ids, lengths


@dataclass
class WordData:
    vocab: list[str]
    vectors: torch.Tensor  # (V, D) embedding init; row 0 (<pad>) is zero
    splits: dict[str, dict[str, torch.Tensor]]  # split -> {input_ids, lengths, labels}
    oov_rate: float  # share of vocabulary words without a pretrained vector


def prepare_word_data(cfg, dataset: Dataset) -> WordData:
    """Encoded splits + word vectors for `cfg`, from the cache when the same settings ran before."""
    from imdb_ray.embeddings import embedding_matrix

    fingerprint = dataset.fingerprint()
    text_key = cache_key("words", fingerprint, cfg.min_freq, cfg.max_vocab, cfg.max_len)

    def build() -> dict:
        tokens = {name: [tokenize(t) for t in split.texts] for name, split in _splits(dataset).items()}
        vocab = build_vocab(tokens["train"], cfg.min_freq, cfg.max_vocab)  # train only: no test words leak in
        out = {"vocab": vocab}
        for name, split in _splits(dataset).items():
            ids, lengths = encode(tokens[name], vocab, cfg.max_len)
            out[name] = {"input_ids": ids, "lengths": lengths, "labels": torch.from_numpy(split.labels)}
        return out

    encoded = load_or_build(cfg.cache_dir, f"words-{text_key}", build)
    vectors, oov = embedding_matrix(cfg, dataset, encoded["vocab"], fingerprint)
    return WordData(encoded["vocab"], vectors, {k: encoded[k] for k in ("train", "val", "test")}, oov)


def _splits(dataset: Dataset) -> dict[str, Split]:
    return {"train": dataset.train, "val": dataset.val, "test": dataset.test}
