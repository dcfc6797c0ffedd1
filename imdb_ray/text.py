"""Word pipeline: tokenizer, vocabulary, fixed-length encoding with true lengths, and the
cached `prepare_word_data` that turns a TrialConfig into tensors plus an embedding matrix."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

import torch

from imdb_ray.cache import cache_key, code_version, load_or_build
from imdb_ray.data import Dataset, Split
from imdb_ray.embeddings import embedding_matrix
from imdb_ray.errors import UserError

if TYPE_CHECKING:
    from imdb_ray.config import TrialConfig
    from transformers import PreTrainedTokenizerBase

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


def truncate(seq: list, n: int, strategy: str = "head") -> list:
    """Keep n items: the head, the tail, or head+tail (a quarter head, the rest tail; Sun et al. 2019
    found head+tail best on long IMDB reviews)."""
    if len(seq) <= n:
        return seq
    if strategy == "tail":
        return seq[len(seq) - n:]
    if strategy == "head+tail":
        k = n // 4
        return seq[:k] + seq[len(seq) - (n - k):]
    return seq[:n]


def padded_width(longest: int, max_len: int, multiple: int = 1) -> int:
    """A batch's width: its longest row, rounded up to a multiple of `multiple` (but not past max_len)."""
    return min(-(-longest // multiple) * multiple, max(longest, max_len))


def encode(token_lists: list[list[str]], vocab: list[str], max_len: int,
           truncation: str = "head", pad_to_multiple_of: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N, W) right-padded with 0, lengths (N,) >= 1); W = the longest row, at most max_len (padding no row uses
    would only cost memory: a max_len above every review's length keeps whole reviews, and no more), rounded up
    to a multiple of `pad_to_multiple_of`."""
    index = {w: i for i, w in enumerate(vocab)}
    seqs = [[index.get(t, UNK_ID) for t in truncate(toks, max_len, truncation)] or [UNK_ID]  # all punctuation: one <unk>
            for toks in token_lists]
    ids = torch.zeros(len(seqs), padded_width(max(map(len, seqs), default=1), max_len, pad_to_multiple_of), dtype=torch.long)
    lengths = torch.ones(len(seqs), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(seq)
        lengths[row] = len(seq)
    return ids, lengths


@dataclass
class WordData:
    vocab: list[str]
    vectors: torch.Tensor  # (V, D) embedding init; row 0 (<pad>) is zero
    splits: dict[str, dict[str, torch.Tensor]]  # split -> {input_ids, lengths, labels}
    oov_rate: float  # share of vocabulary words without a pretrained vector


def prepare_word_data(cfg: TrialConfig, dataset: Dataset) -> WordData:
    """Encoded splits + word vectors for `cfg`, from the cache when the same settings ran before."""
    fingerprint = dataset.fingerprint()
    text_key = cache_key("words", fingerprint, cfg.min_freq, cfg.max_vocab, cfg.max_len, cfg.truncation,
                         code_version(tokenize, build_vocab, truncate, encode))

    def build() -> dict:
        tokens = {name: [tokenize(t) for t in split.texts] for name, split in _splits(dataset).items()}
        vocab = build_vocab(tokens["train"], cfg.min_freq, cfg.max_vocab)  # train only: no test words leak in
        out = {"vocab": vocab}
        for name, split in _splits(dataset).items():
            ids, lengths = encode(tokens[name], vocab, cfg.max_len, cfg.truncation)
            out[name] = {"input_ids": ids, "lengths": lengths, "labels": torch.from_numpy(split.labels)}
        return out

    encoded = load_or_build(cfg.cache_dir, f"words-{text_key}", build)
    vectors, oov = embedding_matrix(cfg, lambda: [tokenize(t) for t in dataset.train.texts], encoded["vocab"], fingerprint)
    return WordData(encoded["vocab"], vectors, {k: encoded[k] for k in ("train", "val", "test")}, oov)


def _splits(dataset: Dataset) -> dict[str, Split]:
    return {"train": dataset.train, "val": dataset.val, "test": dataset.test}


def prepare_hf_data(cfg: TrialConfig, dataset: Dataset, path: str) -> dict[str, dict[str, torch.Tensor]]:
    """Splits tokenised with the fast tokenizer of the checkpoint at `path` (a hub name or a folder;
    special tokens added after truncation), right-padded to max_len, cached like the word pipeline."""
    key = cache_key("hf", dataset.fingerprint(), path, cfg.max_len, cfg.truncation,
                    code_version(encode_hf, _special_tokens, truncate))

    def build() -> dict:
        tokenizer = load_tokenizer(path)
        out = {}
        for name, split in _splits(dataset).items():
            ids, mask = encode_hf(tokenizer, split.texts, cfg.max_len, cfg.truncation)
            out[name] = {"input_ids": ids, "attention_mask": mask, "labels": torch.from_numpy(split.labels)}
        return out

    return load_or_build(cfg.cache_dir, f"hf-{key}", build)


TOKENIZER_PROBE = "the film was good and the acting great"


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    save_it = "save the tokenizer beside the model: tokenizer.save_pretrained(folder)"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    except OSError as e:  # no such folder or hub name, offline
        raise unloadable(path, e) from None
    except ValueError:  # no files it can build a fast tokenizer from (a ModernBERT folder without them)
        raise UserError(f"checkpoint {path!r} has no tokenizer transformers can load (no tokenizer.json, nor files it "
                        f"converts one from); {save_it}") from None
    # From a model folder without tokenizer files transformers builds one of special tokens (BERT, RoBERTa) or of
    # those and a few more (DeBERTa-v2): it would read every review as unknown tokens, and a trial would train on nothing.
    known = set(tokenizer(TOKENIZER_PROBE, add_special_tokens=False)["input_ids"]) - {tokenizer.unk_token_id}
    if len(known) < 2:
        raise UserError(f"checkpoint {path!r} has no tokenizer (it reads every word of {TOKENIZER_PROBE!r} as unknown); {save_it}")
    tokenizer.model_max_length = 10**9  # we truncate ourselves; silence the length warning
    return tokenizer


def unloadable(checkpoint: str, error: OSError) -> UserError:
    """The one-line refusal of a checkpoint transformers could not load (its first line says why)."""
    return UserError(f"checkpoint {checkpoint!r} cannot be loaded ({str(error).strip().splitlines()[0]}); give a "
                     "local folder, set IMDB_RAY_HF_MIRROR, or go online")


def encode_hf(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int, truncation: str = "head",
              pad_to_multiple_of: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both (N, W), W the longest row, at most max_len, rounded up to a multiple of
    `pad_to_multiple_of`: special tokens added after our truncation, right-padded."""
    prefix, suffix = _special_tokens(tokenizer)
    budget = max_len - len(prefix) - len(suffix)
    pieces = tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    rows = [prefix + truncate(seq, budget, truncation) + suffix for seq in pieces]
    width = padded_width(max(map(len, rows), default=1), max_len, pad_to_multiple_of)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for row, full in enumerate(rows):
        ids[row, : len(full)] = torch.tensor(full)
        mask[row, : len(full)] = 1
    return ids, mask


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single text ([CLS] ... [SEP], <s> ... </s>)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    start = next(i for i in range(len(full)) if full[i:i + len(bare)] == bare)
    return full[:start], full[start + len(bare):]
