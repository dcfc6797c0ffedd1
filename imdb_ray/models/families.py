"""Model families: what differs between word models, Hugging Face models and scikit-learn baselines,
in one object each, so the loop, bundles, sweeps and reports never branch on the family's name.

A family says how its data is prepared (tensors per split, the model's build arguments) and
collated, how a trained model is saved into a bundle and loaded back, and how raw texts are encoded
for prediction. `build_model`, `trainable_state` and `load_trainable_state` are the model-side
helpers every family shares.
"""
from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from imdb_ray.errors import UserError, allocation_asked
from imdb_ray.models.registry import get_model

if TYPE_CHECKING:
    from imdb_ray.config import TrialConfig

Encoder = Callable[[list[str]], dict[str, torch.Tensor]]
log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A family's data for one trial: tensors per split, extra build arguments, the vocabulary."""

    splits: dict[str, dict[str, torch.Tensor]]  # split -> {input fields..., labels}
    build_args: dict[str, Any]
    vocab: list[str] | None = None  # word models: what their ids index


WORD_PIPELINE = frozenset({"min_freq", "max_vocab", "embeddings", "embed_dim", "w2v_algorithm", "w2v_window",
                           "w2v_min_count", "w2v_epochs", "freeze_embeddings"})
# What a scikit-learn baseline reads of a TrialConfig: the data, the seed, the metric.
BASELINE_FIELDS = frozenset({"model", "data", "text_column", "label_column", "n_train", "n_test", "val_fraction",
                             "val_split", "group_column", "split_seed", "clean_html", "seed", "metric", "cache_dir", "w2v_workers"})

# `predict` batches texts of similar lengths, so its batches take many widths; CPU torch (oneDNN) keeps compiled
# kernels per input shape, and a CNN's scoring process grew from ~380 to ~760 MB with one per width. Widths rounded
# up to a multiple of 32 (at most 16 at max_len 512) keep that in check.
PREDICT_WIDTH_MULTIPLE = 32


class Family(ABC):
    name = ""
    neural = True  # trained by the torch loop; False: fitted once by scikit-learn
    # False: training ignores the seed (lbfgs on a fixed split), so a rerun with a new seed repeats the
    # search's run exactly; the confirmation stage counts that run as confirmed and spends no rerun on it
    seeded = True
    input_fields: tuple[str, ...] = ()

    def uses(self, field: str) -> bool:
        """Whether a TrialConfig field changes what this family computes (a sweep samples only those)."""
        return True

    def check(self, cfg) -> None:
        """Refuse cfg for what its values alone cannot show (files it names), before anything is created."""

    @abstractmethod
    def prepare(self, cfg, dataset) -> Prepared | None:
        """Tensors for cfg (from the cache when the same settings ran before); None: nothing to prepare."""

    @abstractmethod
    def collate(self, rows) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """A batch of dataset rows -> (model inputs, labels)."""

    @abstractmethod
    def save_bundle(self, model, cfg, folder: Path, vocab: list[str] | None) -> dict[str, Any]:
        """Write the family's files into folder; returns the tensors for weights.pt."""

    @abstractmethod
    def load_bundle(self, cfg, folder: Path, weights: dict) -> tuple[torch.nn.Module, Encoder]:
        """The model with its trained weights, and the encoder that turns raw texts into its inputs."""

    def positive_probs(self, model, inputs, device: torch.device) -> np.ndarray:
        """P(positive) for one encoded batch (what `predict` writes and evaluation thresholds at 0.5)."""
        logits, _ = model(**{k: v.to(device) for k, v in inputs.items()})
        return torch.softmax(logits.float(), -1)[:, 1].cpu().numpy()


class WordFamily(Family):
    """Word vectors (gensim) + our tokenizer and vocabulary; inputs are ids and true lengths."""

    name, input_fields = "word", ("input_ids", "lengths")

    def uses(self, field: str) -> bool:
        return field != "layer_decay"  # per-layer rates are defined for pretrained encoders only

    def check(self, cfg) -> None:
        """A vectors file's first rows have the shape of one (its whole is checked when it is read)."""
        from imdb_ray.embeddings import check_vectors_text

        if cfg.embeddings not in ("word2vec", "random") and Path(cfg.embeddings).suffix not in (".bin", ".kv"):
            check_vectors_text(cfg.embeddings, limit=1000)

    def prepare(self, cfg, dataset) -> Prepared:
        from imdb_ray.text import prepare_word_data

        words = prepare_word_data(cfg, dataset)
        return Prepared(words.splits, {"vectors": words.vectors, "freeze_embeddings": cfg.freeze_embeddings}, words.vocab)

    def collate(self, rows):
        """Stack a batch and cut the padding columns no row in it uses (padding never matters)."""
        ids, lengths, labels = (torch.stack(x) for x in zip(*rows))
        return {"input_ids": ids[:, :int(lengths.max())], "lengths": lengths}, labels

    def save_bundle(self, model, cfg, folder, vocab):
        embedding = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding))
        (folder / "vocab.json").write_text(json.dumps(vocab))
        return {"state": model.state_dict(), "vectors_shape": list(embedding.weight.shape)}

    def load_bundle(self, cfg, folder, weights):
        from imdb_ray.text import encode, tokenize

        vectors = torch.zeros(*weights["vectors_shape"])
        model = build_model(cfg, {"vectors": vectors, "freeze_embeddings": cfg.freeze_embeddings})
        model.load_state_dict(weights["state"])
        vocab = json.loads((folder / "vocab.json").read_text())

        def encoder(texts: list[str]) -> dict[str, torch.Tensor]:
            ids, lengths = encode([tokenize(t) for t in texts], vocab, cfg.max_len, cfg.truncation, PREDICT_WIDTH_MULTIPLE)
            return {"input_ids": ids, "lengths": lengths}

        return model, encoder


class HFFamily(Family):
    """Hugging Face encoders: the checkpoint's fast tokenizer; inputs are ids and attention mask."""

    name, input_fields = "hf", ("input_ids", "attention_mask")

    def uses(self, field: str) -> bool:
        return field not in WORD_PIPELINE  # the checkpoint's tokenizer and embeddings replace ours

    def check(self, cfg) -> None:
        """The checkpoint's tokenizer loads (a typo, or a hub name while offline, fails here)."""
        from imdb_ray.models.hf import max_positions, needs_download, resolve_checkpoint
        from imdb_ray.text import load_tokenizer

        checkpoint = cfg.resolved_model_args()["checkpoint"]
        if needs_download(checkpoint):
            log.info("checkpoint %s: not on this machine, downloading it from the Hugging Face hub ...", checkpoint)
        path = resolve_checkpoint(checkpoint)
        load_tokenizer(path)
        positions = max_positions(path)
        if positions and cfg.max_len > positions:
            raise UserError(f"max_len={cfg.max_len} is more than {checkpoint} takes ({positions} positions, special tokens "
                            f"included); use max_len <= {positions}")

    def prepare(self, cfg, dataset) -> Prepared:
        from imdb_ray.models.hf import resolve_checkpoint
        from imdb_ray.text import prepare_hf_data

        splits = prepare_hf_data(cfg, dataset, resolve_checkpoint(cfg.resolved_model_args()["checkpoint"]))
        # real tokens per row: the train loader buckets by them (the collate cuts each batch to its longest row)
        return Prepared({name: {**t, "lengths": t["attention_mask"].sum(1)} for name, t in splits.items()}, {})

    def collate(self, rows):
        """Cut the columns that are padding in every row."""
        ids, mask, labels = (torch.stack(x) for x in zip(*rows))
        width = int(mask.sum(1).max())
        return {"input_ids": ids[:, :width], "attention_mask": mask[:, :width]}, labels

    def save_bundle(self, model, cfg, folder, vocab):
        """The tensors training changed (all under full fine-tuning; adapters and head under PEFT) and
        the tokenizer; the frozen rest is read again from the checkpoint named in the config."""
        from imdb_ray.models.hf import resolve_checkpoint
        from imdb_ray.text import load_tokenizer

        load_tokenizer(resolve_checkpoint(cfg.resolved_model_args()["checkpoint"])).save_pretrained(folder / "tokenizer")
        return {"trainable": trainable_state(model)}

    def load_bundle(self, cfg, folder, weights):
        from imdb_ray.models.hf import needs_download
        from imdb_ray.text import encode_hf, load_tokenizer

        # the frozen rest is read again from the checkpoint: refused in one line here if the hub it must come from is silent
        needs_download(cfg.resolved_model_args()["checkpoint"])
        model = build_model(cfg, {})
        load_trainable_state(model, weights["trainable"])
        tokenizer = load_tokenizer(str(folder / "tokenizer"))

        def encoder(texts: list[str]) -> dict[str, torch.Tensor]:
            ids, mask = encode_hf(tokenizer, texts, cfg.max_len, cfg.truncation, PREDICT_WIDTH_MULTIPLE)
            return {"input_ids": ids, "attention_mask": mask}

        return model, encoder


class BaselineFamily(Family):
    """scikit-learn pipelines on raw texts: fitted once, no tensors to train. A bundle holds the
    fitted TF-IDF vocabulary and idf and the linear classifier's weights as plain tensors and lists
    (no pickle, so it loads with weights_only=True like every other bundle)."""

    name, neural, seeded = "baseline", False, False

    def uses(self, field: str) -> bool:
        return field in BASELINE_FIELDS

    def prepare(self, cfg, dataset) -> None:
        return None  # the pipeline reads raw texts: nothing to tokenise or cache

    def collate(self, rows):
        raise UserError("a scikit-learn baseline has no tensor batches (it is fitted by `train`, not the torch loop)")

    def save_bundle(self, model, cfg, folder, vocab):
        vectorizer, classifier = model[0], model[-1]
        return {"terms": sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get),
                "idf": torch.from_numpy(vectorizer.idf_) if getattr(vectorizer, "use_idf", False) else None,
                "coef": torch.from_numpy(classifier.coef_),
                "intercept": torch.from_numpy(classifier.intercept_), "classes": torch.from_numpy(classifier.classes_)}

    def load_bundle(self, cfg, folder, weights):
        from sklearn.linear_model import LogisticRegression

        pipeline = get_model(cfg.model).build(**cfg.model_args)  # the same, unfitted: its fitted state set below
        vectorizer, classifier = pipeline[0], pipeline[-1]
        vectorizer.vocabulary_ = {term: i for i, term in enumerate(weights["terms"])}
        if weights["idf"] is not None:
            vectorizer.idf_ = weights["idf"].numpy()
        if type(classifier) is not LogisticRegression:  # NB-LR: its ratio is folded into the weights, so a plain
            classifier = LogisticRegression(C=classifier.C)  # LR predicts the same (and loads without our code)
            pipeline.steps[-1] = (pipeline.steps[-1][0], classifier)
        classifier.coef_, classifier.intercept_ = weights["coef"].numpy(), weights["intercept"].numpy()
        classifier.classes_ = weights["classes"].numpy()
        return pipeline, lambda texts: texts  # the pipeline reads raw (cleaned) texts

    def positive_probs(self, model, inputs, device) -> np.ndarray:
        return model.predict_proba(inputs)[:, 1]


FAMILIES: dict[str, Family] = {f.name: f for f in (WordFamily(), HFFamily(), BaselineFamily())}


def seed_independent(model: str) -> bool:
    """Whether `model` trains to the same weights whatever its seed (unknown names: no)."""
    try:
        return not FAMILIES[get_model(model).family].seeded
    except UserError:  # a run logged by another version, under a name this one does not know
        return False


def build_model(cfg: TrialConfig, build_args: dict) -> torch.nn.Module:
    """cfg's registered model with its parameters and the family's build arguments (word vectors)."""
    try:
        return get_model(cfg.model).build(**build_args, **cfg.model_args)
    except ValueError as e:
        raise UserError(f"model '{cfg.model}': {e}") from None
    except RuntimeError as e:  # the CPU allocator's refusal, said plainly (CUDA's OutOfMemoryError already is)
        if "can't allocate memory" not in str(e):
            raise
        raise MemoryError(f"model '{cfg.model}' with {cfg.model_args} does not fit in memory ({allocation_asked(e)}); "
                          "make it smaller") from None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the parameters training can change. Frozen ones (PEFT bases, frozen embeddings,
    quantized weights that cannot be reloaded on CPU) are rebuilt from their source instead."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise UserError(f"checkpoint does not match the model (missing {missing[:3]}, unknown {unknown[:3]})")
    with torch.no_grad():
        for n, value in state.items():
            params[n].copy_(value)
