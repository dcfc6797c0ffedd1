"""The metric table: each selectable metric's name, direction and the key trials report their best under.

Read by the training loop (which epoch is best), the sweep (Tune's metric and mode, ASHA, TPE), its
callbacks, post-sweep evaluation and reports, so "which way is better" is decided in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

@dataclass(frozen=True)
class Metric:
    name: str
    mode: Literal["max", "min"]

    @property
    def best_key(self) -> str:
        """What each epoch reports: the best value so far (what a sweep ranks and its searcher optimises)."""
        return f"best_{self.name}"

    def better(self, value: float, than: float | None) -> bool:
        return than is None or (value > than if self.mode == "max" else value < than)


METRICS: dict[str, Metric] = {m.name: m for m in (Metric("val_accuracy", "max"), Metric("val_f1", "max"),
                                                   Metric("val_loss", "min"))}
MetricName = Literal[tuple(METRICS)]  # what a run may select its best epoch on (the annotation of config.metric)


def metric(name: str) -> Metric:
    return METRICS[name]
