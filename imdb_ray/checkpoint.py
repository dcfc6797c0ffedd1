"""What a training run's checkpoint holds and where an epoch's checkpoint is written before its host takes it.

`Progress` is the loop's own state beyond the model and optimiser; `save_checkpoint` / `load_checkpoint` put it
and theirs in one `checkpoint.pt`. `epoch_checkpoint_folder` is the temporary folder an epoch's checkpoint is
written to and handed to `on_epoch` in (Ray copies it to the trial's storage; `train` moves it to its run folder).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from imdb_ray.config import TrialConfig
from imdb_ray.metrics import METRICS
from imdb_ray.models import load_trainable_state, trainable_state

CHECKPOINT_FILE = "checkpoint.pt"
EPOCH_FOLDER_PREFIX = "imdb_ray_ckpt_"


@dataclass
class Progress:
    """The loop's own state beyond the model and optimiser: what a checkpoint must carry to resume."""

    epoch: int = 0  # the last finished epoch
    history: list[dict] = field(default_factory=list)
    best_state: dict | None = None  # the best epoch's trainable tensors
    best_value: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best (early stopping)

    def record(self, cfg: TrialConfig, metrics: dict, model: torch.nn.Module) -> None:
        self.epoch = metrics["epoch"]
        self.history.append(metrics)
        selection = METRICS[cfg.metric]
        value = metrics[cfg.metric]
        if selection.better(value, self.best_value):
            self.best_value, self.best_state, self.best_epoch, self.bad_epochs = value, trainable_state(model), self.epoch, 0
        else:
            self.bad_epochs += 1
        metrics[selection.best_key] = self.best_value  # what a sweep ranks on and its searcher optimises
        metrics["finished"] = self.stopped(cfg)  # the trial's own last epoch (a scheduler may stop it sooner)

    def stopped(self, cfg: TrialConfig) -> bool:
        return self.epoch >= cfg.epochs or (cfg.patience > 0 and self.bad_epochs >= cfg.patience)


def save_checkpoint(folder: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler, progress: Progress) -> None:
    torch.save({"model": trainable_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": torch.get_rng_state(), "epoch": progress.epoch,
                "best_model": progress.best_state, "best_value": progress.best_value, "bad_epochs": progress.bad_epochs,
                "best_epoch": progress.best_epoch, "history": json.dumps(progress.history)},
               os.path.join(folder, CHECKPOINT_FILE))


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler) -> Progress:
    state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    load_trainable_state(model, state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    return Progress(epoch=state["epoch"], history=json.loads(state["history"]), best_state=state["best_model"],
                    best_value=state["best_value"], best_epoch=state["best_epoch"], bad_epochs=state["bad_epochs"])


def checkpoint_epoch(folder: str | Path) -> int:
    """The last finished epoch a checkpoint folder holds."""
    return int(torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)["epoch"])


@contextmanager
def epoch_checkpoint_folder() -> Iterator[str]:
    """A temporary folder for one epoch's checkpoint, named after this host and process. A process killed while its
    host takes the checkpoint (a Ray Train worker SIGKILLed while it reports) never removes its folder, a model's
    size each; the next epoch folder made on this host removes those of processes that are gone."""
    remove_orphaned_epoch_folders()
    with tempfile.TemporaryDirectory(prefix=f"{_owner_prefix()}{os.getpid()}_") as folder:
        yield folder


def remove_orphaned_epoch_folders(parent: str | Path | None = None) -> list[Path]:
    """Remove this host's epoch checkpoint folders whose process has ended; the folders removed."""
    removed, prefix = [], _owner_prefix()
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{EPOCH_FOLDER_PREFIX}*"):
        pid = folder.name[len(prefix):].split("_")[0] if folder.name.startswith(prefix) else ""
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _owner_prefix() -> str:
    # the host too: on a folder shared between hosts (or containers, whose process ids are their own), another
    # host's process ids say nothing here
    return f"{EPOCH_FOLDER_PREFIX}{socket.gethostname()}_"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
