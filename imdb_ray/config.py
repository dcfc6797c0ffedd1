"""TrialConfig: the one flat, typed record that fully describes a trial.

It is what travels from a sweep file (or the CLI) to a worker; a trial is a function of it.
Keys that are not fields here are the model's own parameters (`model_args`), checked against the
model's constructor signature.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imdb_ray import typecheck
from imdb_ray.errors import UserError
from imdb_ray.redact import redact
from imdb_ray.models import FAMILIES, Family, check_model_args, get_model

CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("constant", "linear", "cosine"),
    "device": ("auto", "cpu", "cuda"),
    "metric": ("val_accuracy", "val_f1", "val_loss"),
    "w2v_algorithm": ("skipgram", "cbow"),
    "truncation": ("head", "tail", "head+tail"),
    "val_split": ("auto", "random", "group"),
}
# Training recipes as presets over the optimisation fields (not code paths).
RECIPES = {
    "native": {"optimizer": "adamw", "schedule": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0, "grad_clip": 0.0},
    "tuned": {"optimizer": "adamw", "schedule": "linear", "warmup_ratio": 0.1, "weight_decay": 0.01, "grad_clip": 1.0},
}


@dataclass
class TrialConfig:
    # model
    model: str = "gru"
    model_args: dict[str, Any] = field(default_factory=dict)
    # data
    data: str | None = None  # None: the bundled IMDB copy; else a folder, "train,test" files, or a datasets id
    text_column: str = "text"
    label_column: str = "label"
    n_train: int | None = None  # train+val rows after subsetting; None = all 25k
    n_test: int | None = None
    val_fraction: float = 0.1
    # "group": whole groups (IMDB: movies) on one side, like the official split; "random": stratified;
    # "auto": group when the data has group_column, else random (results/validation_gap.md: why)
    val_split: str = "auto"
    group_column: str = "movie_id"  # the group of each row: a column of the data (bundled IMDB: its meta file)
    split_seed: int = 0  # which rows form the subsets and the validation split; `seed` is the model's randomness
    clean_html: bool = True
    # word pipeline
    max_len: int = 256  # words for word models, tokenizer tokens for Hugging Face models
    truncation: str = "head"  # head | tail | head+tail, for texts longer than max_len
    min_freq: int = 2
    max_vocab: int = 50_000
    embeddings: str = "word2vec"  # "word2vec" (trained on the train split), "random", or a vectors file path
    embed_dim: int = 100
    w2v_algorithm: str = "skipgram"
    w2v_window: int = 5
    w2v_min_count: int = 2
    w2v_epochs: int = 5
    freeze_embeddings: bool = False
    bucket_by_length: bool = True  # train batches of similar lengths (less padding to compute); one worker only
    # optimisation
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    schedule: str = "constant"
    warmup_ratio: float = 0.0
    grad_clip: float = 1.0  # 0 = off
    batch_size: int = 64
    epochs: int = 5
    patience: int = 0  # early stopping on `metric`; 0 = off
    recipe: str | None = None  # "native" | "tuned": sets the five fields above it (see RECIPES)
    layer_decay: float = 1.0  # layer-wise lr decay for Hugging Face models; 1 = off
    metric: str = "val_accuracy"
    # training strategies (losses that compose with every model)
    rdrop_alpha: float = 0.0  # R-Drop: weight of the symmetric KL between two dropout passes; 0 = off
    supcon_weight: float = 0.0  # supervised contrastive loss weight; 0 = off
    supcon_tau: float = 0.1  # its temperature
    # runtime
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA only
    cache_dir: str = ".cache/imdb_ray"
    w2v_workers: int = 1  # Word2Vec threads: 1 is bit-reproducible; 2 is ~1.6x faster on 2 cores but reorders updates

    # ------------------------------------------------------------------ construction
    @classmethod
    def fields(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls) if f.name != "model_args"}

    @classmethod
    def from_flat(cls, flat: dict[str, Any], *, strict: bool = True) -> "TrialConfig":
        """Build from a flat dict (sweep sample, CLI). Non-field keys go to model_args.

        strict=False drops keys the chosen model does not take (a sweep space may hold
        parameters for several models; each trial keeps the ones that apply to it).
        """
        known = cls.fields()
        kwargs = {k: v for k, v in flat.items() if k in known}
        model_args = dict(flat.get("model_args") or {})
        model_args.update({k: v for k, v in flat.items() if k not in known and k != "model_args"})
        if kwargs.get("recipe") is not None:
            if kwargs["recipe"] not in RECIPES:
                raise UserError(f"recipe={kwargs['recipe']!r} is not one of {', '.join(RECIPES)}")
            kwargs.update(RECIPES[kwargs["recipe"]])
        cfg = cls(**kwargs)
        if not strict:
            params = get_model(cfg.model).params
            model_args = {k: v for k, v in model_args.items() if k in params}
        cfg.model_args = model_args
        return cfg.validate()

    def validate(self) -> "TrialConfig":
        for name, hint in _field_types().items():  # types first: the range checks below compare values
            typecheck.check(name, getattr(self, name), hint)
        check_model_args(self.model, self.model_args)
        for name, options in CHOICES.items():
            if getattr(self, name) not in options:
                raise UserError(f"{name}={getattr(self, name)!r} is not one of {', '.join(options)}")
        positive = ("lr", "batch_size", "epochs", "max_len", "embed_dim", "min_freq", "max_vocab", "w2v_epochs", "w2v_window",
                    "w2v_workers")
        for name in positive:
            if not getattr(self, name) > 0:
                raise UserError(f"{name}={getattr(self, name)!r} must be > 0")
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None and getattr(self, name) < 4:
                raise UserError(f"{name}={getattr(self, name)} must be at least 4 (two per class)")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"val_fraction={self.val_fraction} must be between 0 and 1")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if not 0 < self.layer_decay <= 1:
            raise UserError(f"layer_decay={self.layer_decay} must be in (0, 1]")
        if not self.supcon_tau > 0:
            raise UserError(f"supcon_tau={self.supcon_tau} must be > 0")
        for name in ("weight_decay", "grad_clip", "patience", "rdrop_alpha", "supcon_weight"):
            if getattr(self, name) < 0:
                raise UserError(f"{name}={getattr(self, name)} must be >= 0")
        if self.embeddings not in ("word2vec", "random") and not Path(self.embeddings).exists():
            raise UserError(f"embeddings={self.embeddings!r}: not 'word2vec', 'random', or an existing vectors file")
        return self

    # ------------------------------------------------------------------ views
    @property
    def strategy(self) -> str:
        """A short name for the loss: ce, rdrop, supcon or rdrop+supcon."""
        parts = [name for name, on in (("rdrop", self.rdrop_alpha > 0), ("supcon", self.supcon_weight > 0)) if on]
        return "+".join(parts) or "ce"

    @property
    def family(self) -> Family:
        """How this model's data is prepared and its bundle saved (models/families.py)."""
        return FAMILIES[get_model(self.model).family]

    def resolved_model_args(self) -> dict[str, Any]:
        """The model's parameters with defaults filled in: what actually ran."""
        return {**get_model(self.model).params, **self.model_args}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """One level, model parameters (with defaults) inlined: for MLflow params and tables. Only
        the fields the model's family uses (a baseline has no learning rate to show)."""
        family = self.family
        d = {k: v for k, v in self.to_dict().items() if k != "model_args" and family.uses(k)}
        d.update(self.resolved_model_args())
        return d

    def with_absolute_paths(self) -> "TrialConfig":
        """Ray Tune changes a trial's working directory: pin every path before trials start."""
        cfg = dataclasses.replace(self, cache_dir=str(Path(self.cache_dir).expanduser().resolve()))
        if cfg.embeddings not in ("word2vec", "random"):
            cfg.embeddings = str(Path(cfg.embeddings).expanduser().resolve())
        if cfg.data is not None:
            parts = [Path(p.strip()).expanduser() for p in cfg.data.split(",")]
            if all(p.exists() for p in parts):
                cfg.data = ",".join(str(p.resolve()) for p in parts)
        return cfg

    def save(self, path: str | Path) -> None:
        """config.json of a run or a model bundle, secrets replaced (it travels with the model)."""
        Path(path).write_text(json.dumps(redact(self.to_dict()), indent=2, default=str))


@functools.cache
def _field_types() -> dict[str, Any]:
    return {k: v for k, v in typecheck.hints(TrialConfig).items() if k in TrialConfig.fields()}
