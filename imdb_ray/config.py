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
from typing import TYPE_CHECKING, Annotated, Any, Literal

from imdb_ray import contracts
from imdb_ray.contracts import Ge, Gt, Le, Lt, NonNegative, NonNegativeFloat, OpenFraction, Positive, PositiveFloat
from imdb_ray.errors import UserError
from imdb_ray.metrics import MetricName
from imdb_ray.redact import redact

if TYPE_CHECKING:
    from imdb_ray.models import Family

# Training recipes as presets over the optimisation fields (not code paths).
RECIPES = {
    "native": {"optimizer": "adamw", "schedule": "constant", "warmup_ratio": 0.0, "weight_decay": 0.0, "grad_clip": 0.0},
    "tuned": {"optimizer": "adamw", "schedule": "linear", "warmup_ratio": 0.1, "weight_decay": 0.01, "grad_clip": 1.0},
}


@dataclass
class TrialConfig:
    """Each field's annotation is its contract (imdb_ray/contracts.py): type, range or choices, checked
    by `validate` and shown by `train --help`. The comment after a field is its help text."""
    # model
    model: str = "gru"  # a registered model (python -m imdb_ray models)
    model_args: dict[str, Any] = field(default_factory=dict)
    # data
    data: str | None = None  # None: the bundled IMDB copy; else a folder, "train,test" files, or a datasets id
    text_column: str = "text"  # the column of the review text
    label_column: str = "label"  # the column of the label (0/1, neg/pos, negative/positive)
    n_train: Annotated[int, Ge(4)] | None = None  # train+val rows after subsetting; None = all 25k
    n_test: Annotated[int, Ge(4)] | None = None  # test rows after subsetting; None = all
    val_fraction: OpenFraction = 0.1  # the share of the training rows held out for validation
    # "group": whole groups (IMDB: movies) on one side, like the official split; "random": stratified;
    # "auto": group when the data has group_column, else random (results/validation_gap.md: why)
    val_split: Literal["auto", "random", "group"] = "auto"  # how validation rows are chosen (auto: by group when there are groups)
    group_column: str = "movie_id"  # the group of each row: a column of the data (bundled IMDB: its meta file)
    split_seed: NonNegative = 0  # which rows form the subsets and the validation split; `seed` is the model's randomness
    clean_html: bool = True  # strip HTML tags such as <br /> before tokenising
    # word pipeline
    max_len: Positive = 256  # words for word models, tokenizer tokens for Hugging Face models (at most the checkpoint's positions)
    truncation: Literal["head", "tail", "head+tail"] = "head"  # which part of a text longer than max_len is kept
    min_freq: Positive = 2  # words seen fewer times in training are out of vocabulary
    max_vocab: Positive = 50_000  # the vocabulary's size limit (most frequent first)
    embeddings: str = "word2vec"  # "word2vec" (trained on the train split), "random", or a vectors file path
    embed_dim: Positive = 100  # word-vector size (ignored for a vectors file: its own)
    w2v_algorithm: Literal["skipgram", "cbow"] = "skipgram"  # Word2Vec's training algorithm
    w2v_window: Positive = 5  # Word2Vec's context window
    w2v_min_count: Positive = 2  # Word2Vec ignores rarer words
    w2v_epochs: Positive = 5  # Word2Vec's passes over the training texts
    freeze_embeddings: bool = False  # keep the word vectors fixed while training
    bucket_by_length: bool = True  # train batches of similar lengths (less padding to compute); DDP ranks share them
    batch_tokens: Positive | None = None  # with bucket_by_length: train batches of this many token slots, not batch_size rows
    # optimisation
    optimizer: Literal["adamw", "sgd"] = "adamw"  # the optimiser
    lr: PositiveFloat = 1e-3  # the learning rate (the peak, under a schedule)
    weight_decay: NonNegativeFloat = 0.0  # decoupled weight decay (AdamW) or L2 (SGD)
    momentum: Annotated[float, Ge(0), Lt(1)] = 0.9  # SGD only
    schedule: Literal["constant", "linear", "cosine"] = "constant"  # the learning rate after warm-up
    warmup_ratio: Annotated[float, Ge(0), Lt(1)] = 0.0  # the share of steps spent warming the learning rate up
    grad_clip: NonNegativeFloat = 1.0  # the gradient-norm limit; 0 = off
    batch_size: Positive = 64  # examples per step (per worker)
    epochs: Positive = 5  # passes over the training rows
    patience: NonNegative = 0  # early stopping on `metric`; 0 = off
    recipe: Literal["native", "tuned"] | None = None  # sets the five optimisation fields above it (see RECIPES)
    layer_decay: Annotated[float, Gt(0), Le(1)] = 1.0  # layer-wise lr decay for Hugging Face models; 1 = off
    metric: MetricName = "val_accuracy"  # the validation metric that picks the best epoch (imdb_ray/metrics.py)
    # training strategies (losses that compose with every model)
    rdrop_alpha: NonNegativeFloat = 0.0  # R-Drop: weight of the symmetric KL between two dropout passes; 0 = off
    supcon_weight: NonNegativeFloat = 0.0  # supervised contrastive loss weight; 0 = off
    supcon_tau: PositiveFloat = 0.1  # its temperature
    # runtime
    seed: NonNegative = 0  # the model's randomness (initialisation, dropout, batch order)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when there is a GPU, else the CPU
    amp: bool = True  # mixed precision on CUDA only
    cache_dir: str = ".cache/imdb_ray"  # where splits, vocabularies and word vectors are cached
    w2v_workers: Positive = 1  # Word2Vec threads: 1 is bit-reproducible; 2 is ~1.6x faster on 2 cores but reorders updates

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
            contracts.check("recipe", kwargs["recipe"], field_types()["recipe"])
            kwargs.update(RECIPES[kwargs["recipe"]])
        cfg = cls(**kwargs)
        if not strict:
            from imdb_ray.models import get_model  # (the registry imports torch: not for --help or a sweep file)

            params = get_model(cfg.model).params
            model_args = {k: v for k, v in model_args.items() if k in params}
        cfg.model_args = model_args
        return cfg.validate()

    def validate(self) -> "TrialConfig":
        """Every field against its annotation, then the model's parameters against theirs, then what no
        single annotation can say."""
        for name, hint in field_types().items():
            contracts.check(name, getattr(self, name), hint)
        from imdb_ray.models import check_model_args

        check_model_args(self.model, self.model_args)
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
        from imdb_ray.models import FAMILIES, get_model

        return FAMILIES[get_model(self.model).family]

    def resolved_model_args(self) -> dict[str, Any]:
        """The model's parameters with defaults filled in: what actually ran."""
        from imdb_ray.models import get_model

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
        """Pin every path before it is saved or trials start (Ray Tune changes a trial's working directory; a model
        bundle reads its base checkpoint again from wherever `predict` runs)."""
        cfg = dataclasses.replace(self, cache_dir=str(Path(self.cache_dir).expanduser().resolve()),
                                  model_args=dict(self.model_args))
        if cfg.embeddings not in ("word2vec", "random"):
            cfg.embeddings = str(Path(cfg.embeddings).expanduser().resolve())
        checkpoint = Path(str(cfg.model_args.get("checkpoint", ""))).expanduser()
        if "checkpoint" in cfg.model_args and checkpoint.is_dir():  # a folder here; a hub name stays a name
            cfg.model_args["checkpoint"] = str(checkpoint.resolve())
        if cfg.data is not None:
            parts = [Path(p.strip()).expanduser() for p in cfg.data.split(",")]
            if all(p.exists() for p in parts):
                cfg.data = ",".join(str(p.resolve()) for p in parts)
        return cfg

    def save(self, path: str | Path) -> None:
        """config.json of a run or a model bundle, secrets replaced (it travels with the model)."""
        Path(path).write_text(json.dumps(redact(self.to_dict()), indent=2, default=str))


@functools.cache
def field_types() -> dict[str, Any]:
    """Each field's annotation: its type with its range or choices (what `train --help` shows)."""
    return {k: v for k, v in contracts.hints(TrialConfig).items() if k in TrialConfig.fields()}


@functools.cache
def field_help() -> dict[str, str]:
    """Each field's help: the comment written after it above."""
    return {k: v for k, v in contracts.field_comments(TrialConfig).items() if k in TrialConfig.fields()}
