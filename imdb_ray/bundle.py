"""A trained model as a folder that loads without the sweep, the cache or the training data.

    config.json    the TrialConfig that trained it
    weights.pt     tensors (torch.save of plain dicts: loads with weights_only=True)
    vocab.json     word models: the vocabulary their ids index (the embedding table is in weights.pt)
    tokenizer/     Hugging Face models: the checkpoint's tokenizer

Word models store every tensor. Hugging Face models store the tensors training changed; the frozen
rest (a PEFT base, quantized weights) is read again from the checkpoint named in config.json, so
that checkpoint must be reachable (hub cache, local folder or IMDB_RAY_HF_MIRROR) where you predict.
`train` writes one to <run folder>/model; a sweep logs its best trial's as the MLflow artifact `model`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from imdb_ray.batching import SortedBatches
from imdb_ray.config import TrialConfig
from imdb_ray.data import clean_text
from imdb_ray.errors import UserError

LABELS = ("negative", "positive")


def save_bundle(model: torch.nn.Module, cfg: TrialConfig, folder: str | Path, vocab: list[str] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save(folder / "config.json")
    torch.save(cfg.family.save_bundle(model, cfg, folder, vocab), folder / "weights.pt")
    return folder


class Predictor:
    """P(positive) for raw review texts, with the exact text pipeline the model was trained with."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        folder = Path(folder)
        missing = [f for f in ("config.json", "weights.pt") if not (folder / f).is_file()]
        if missing:
            raise UserError(f"{folder}: not a model folder (missing {', '.join(missing)}); give a `train` run folder, "
                            "an MLflow run id, or sweep:NAME")
        try:  # an edited or foreign config.json: one line saying what is wrong, not a TypeError
            self.cfg = TrialConfig(**json.loads((folder / "config.json").read_text())).validate()
        except (TypeError, ValueError, UserError) as e:
            raise UserError(f"{folder / 'config.json'}: not a config this version can load ({e})") from None
        weights = torch.load(folder / "weights.pt", map_location="cpu", weights_only=True)
        self.device = torch.device(device)
        self.model, self._encode = self.cfg.family.load_bundle(self.cfg, folder, weights)
        if isinstance(self.model, torch.nn.Module):  # a scikit-learn baseline has no device or train mode
            self.model.to(self.device).eval()

    def encode(self, texts: list[str]):
        return self._encode([clean_text(t) if self.cfg.clean_html else t for t in texts])

    @torch.no_grad()
    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """P(positive) per text, in the texts' order, batch by batch (memory follows the batch). A batch holds texts
        of similar length (in characters, for tokens), longest first, so it pads little, as evaluation batches do."""
        family = self.cfg.family
        batches = SortedBatches([len(t) for t in texts], batch_size)
        probs = [family.positive_probs(self.model, self.encode([texts[i] for i in rows]), self.device) for rows in batches]
        return batches.unsort(np.concatenate(probs)) if probs else np.zeros(0)


def bundle_in(model_folder: Path) -> Path:
    """The bundle inside a downloaded MLflow model folder (or the folder itself when it is a bundle)."""
    if (model_folder / "config.json").is_file():
        return model_folder  # a bundle logged as plain artifacts (sweeps before the pyfunc)
    found = sorted(p.parent for p in (model_folder / "artifacts").glob("*/config.json"))
    return found[0] if found else model_folder
