"""Word vectors for the embedding layer: gensim Word2Vec trained on the train split, vectors loaded
from a word2vec / GloVe file through KeyedVectors, or random. Cached like the encoded data."""
from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from imdb_ray.cache import cache_key, code_version, load_or_build
from imdb_ray.errors import UserError, allocation_asked

if TYPE_CHECKING:
    from gensim.models import KeyedVectors
    from imdb_ray.config import TrialConfig

log = logging.getLogger(__name__)


def stable_hash(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(token_lists: list[list[str]], *, dim: int, window: int, min_count: int, epochs: int,
                   skipgram: bool, workers: int, seed: int) -> KeyedVectors:
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class EpochLines(CallbackAny2Vec):  # on the full train split, minutes of one core: say how far it is
        def __init__(self):
            self.epoch, self.start = 0, time.perf_counter()

        def on_epoch_end(self, model):
            self.epoch += 1
            log.info("Word2Vec on %s texts: epoch %d/%d (%.0fs)", f"{len(token_lists):,}", self.epoch, epochs,
                     time.perf_counter() - self.start)

    # gensim seeds each word's initial vector with hashfxn(word + seed); Python's own hash differs per
    # process, so a stable hash makes the init the same on every node. With one worker the whole
    # training is bit-reproducible; more workers reorder updates (faster, not bitwise equal).
    model = Word2Vec(sentences=token_lists, vector_size=dim, window=window, min_count=min_count, epochs=epochs,
                     sg=int(skipgram), workers=workers, seed=seed, hashfxn=stable_hash, callbacks=[EpochLines()])
    return model.wv


def check_vectors_text(path: str | Path, limit: int | None = None) -> bool:
    """A word2vec/GloVe text file's shape, before gensim reads it: gensim trusts the first row's width and silently
    broadcasts a shorter row (one value copied into every dimension). Every row (or the first `limit`) must be a word
    and the same number of values. Returns whether it has a word2vec header ("COUNT DIM")."""
    with open(path, "rb") as stream:
        first = stream.readline().split()
        header = len(first) == 2 and first[0].isdigit() and first[1].isdigit()
        width = int(first[1]) + 1 if header else len(first)
        if not header:  # GloVe: the first line is a row
            _check_row(path, 1, first, width)
        for number, line in enumerate(stream, 2):
            if limit is not None and number > limit:
                break
            _check_row(path, number, line.split(), width)
    return header


def _check_row(path: str | Path, number: int, parts: list[bytes], width: int) -> None:
    not_vectors = (f"{path}: line {number} is not a word followed by numbers; give a word2vec or GloVe text file, "
                   "a .bin or a .kv")
    if width < 2:
        raise UserError(not_vectors)
    if not parts:  # gensim reads a blank line, even the last, as a row of no values
        raise UserError(f"{path}: line {number} is empty; every line must be a word and its {width - 1} values")
    if len(parts) != width:
        raise UserError(f"{path}: line {number} has {len(parts) - 1} value(s) after its word, the file's vectors "
                        f"{width - 1}; every line must be a word and the same number of values")
    if number <= 3:  # the numbers themselves, on the first rows: a file of another kind fails here
        try:
            [float(x) for x in parts[1:]]
        except ValueError:
            raise UserError(not_vectors) from None


def load_vectors(path: str) -> KeyedVectors:
    """A word2vec text/binary file, a GloVe file (no header line), or gensim's own .kv, through KeyedVectors."""
    from gensim.models import KeyedVectors

    p = Path(path)
    try:
        if p.suffix == ".kv":
            kv = KeyedVectors.load(str(p))
        else:
            binary = p.suffix == ".bin"
            header = True if binary else check_vectors_text(p)
            kv = KeyedVectors.load_word2vec_format(str(p), binary=binary, no_header=not header)
    except UserError:
        raise
    except Exception as e:  # gensim's own refusals: a count that does not match, bytes that are not UTF-8, a pickle
        raise UserError(f"{path}: not a word2vec, GloVe or gensim vectors file ({type(e).__name__}: {e})") from None
    if len(kv) == 0 or kv.vector_size == 0:
        raise UserError(f"{path}: no vectors in it")
    return kv


def embedding_matrix(cfg: TrialConfig, train_tokens: Callable[[], list[list[str]]], vocab: list[str],
                     fingerprint: str) -> tuple[torch.Tensor, float]:
    """(V, D) float matrix aligned with `vocab`, and the share of words that had no vector.
    `train_tokens` gives the tokenised train split, called only when Word2Vec has to be trained."""
    source = cfg.embeddings
    params = (cfg.embed_dim, cfg.w2v_algorithm, cfg.w2v_window, cfg.w2v_min_count, cfg.w2v_epochs, cfg.seed,
              cfg.w2v_workers == 1)  # a multi-threaded build is not the reproducible one: never served in its place
    if source not in ("word2vec", "random"):
        params = (str(Path(source).resolve()), Path(source).stat().st_mtime)
    key = cache_key("vectors", fingerprint, vocab[:50], len(vocab), source, params,
                    code_version(train_word2vec, load_vectors, embedding_matrix, _random_rows))

    def build() -> dict:
        rng = np.random.default_rng(cfg.seed)
        if source == "random":
            return {"vectors": torch.from_numpy(_random_rows(rng, len(vocab), cfg.embed_dim)), "oov": 1.0}
        if source == "word2vec":
            kv = train_word2vec(train_tokens(), dim=cfg.embed_dim, window=cfg.w2v_window,
                                min_count=cfg.w2v_min_count, epochs=cfg.w2v_epochs,
                                skipgram=cfg.w2v_algorithm == "skipgram", workers=cfg.w2v_workers, seed=cfg.seed)
        else:
            kv = load_vectors(source)
        matrix = _random_rows(rng, len(vocab), kv.vector_size, scale=float(np.std(kv.vectors)))
        missing = 0
        for i, word in enumerate(vocab[2:], start=2):
            if word in kv.key_to_index:
                matrix[i] = kv[word]
            else:
                missing += 1
        matrix[0] = 0.0  # <pad>
        return {"vectors": torch.from_numpy(matrix), "oov": missing / max(1, len(vocab) - 2)}

    try:
        entry = load_or_build(cfg.cache_dir, f"vectors-{key}", build)
    except MemoryError as e:  # numpy's words name an array's shape, not the setting that made it
        if source not in ("word2vec", "random"):
            raise
        raise MemoryError(f"word vectors of {len(vocab):,} words x embed_dim={cfg.embed_dim} do not fit in memory "
                          f"({allocation_asked(e)}); lower embed_dim") from None
    return entry["vectors"], float(entry["oov"])


def _random_rows(rng: np.random.Generator, n: int, dim: int, scale: float = 0.1) -> np.ndarray:
    m = (rng.standard_normal((n, dim)) * scale).astype(np.float32)
    m[0] = 0.0
    return m
