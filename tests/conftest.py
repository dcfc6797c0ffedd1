"""Shared fixtures: small real IMDB subsets (the bundled copy) and an isolated cache per test."""
from __future__ import annotations

import pytest

from imdb_ray.config import TrialConfig
from imdb_ray.data import load_dataset


@pytest.fixture(scope="session")
def small_imdb():
    """240 real reviews (train+val, balanced, seeded) and 100 test reviews."""
    return load_dataset(n_train=240, n_test=100, seed=0)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A config that trains in seconds on CPU; override fields with dataclasses.replace."""
    return TrialConfig(model="gru", n_train=240, n_test=100, max_len=64, embed_dim=16, w2v_epochs=1,
                       epochs=2, batch_size=32, cache_dir=str(tmp_path / "cache"), workers=1,
                       model_args={"hidden": 16})
