"""Every use of a Ray internal, in one place, each checked against the Ray version it was written for.

imdb_ray uses Ray's public Tune and Train APIs everywhere else. What is here reaches past them, to work
around a behaviour of Ray 2.60 or to start fewer processes; `tests/test_ray_compat.py` fails on any other
Ray version, so an upgrade re-reads this file first (is each workaround still needed? does each name
still exist?).
"""
from __future__ import annotations

import dataclasses
import importlib
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

from ray.train.backend import Backend, BackendConfig

if TYPE_CHECKING:
    from ray.train import Result
    from ray.train._internal.session import _TrainingResult as TrainingResult  # noqa: F401 (trial.py's hints)
    from ray.train.v2._internal.util import TrainingFramework
    from ray.tune import ResultGrid
    from ray.util.placement_group import PlacementGroup

RAY_VERSION = "2.60"  # what every workaround below was written against


def training_result_type() -> type:
    """The type Tune hands `Trainable.restore` (a checkpoint with its metrics): trial.DirectTrial renames a
    replaced checkpoint to the one the experiment state names."""
    from ray.train._internal.session import _TrainingResult

    return _TrainingResult


def function_trainable(fn: Callable[[dict], None]) -> type:
    """The class Tune makes of a function trainable, to subclass (trial.DirectTrial overrides restore)."""
    from ray.tune.trainable.function_trainable import wrap_function

    return wrap_function(fn)


def sweep_torch_trainer() -> type:
    """TorchTrainer less two helper actors that Ray 2.60 starts for every Train run and a sweep's runs do
    not use; each is a Python process that imports Ray Data (~3-5 CPU-s on 2 cores), per trial:
    - the DatasetManager, started even when no Ray Dataset is passed (the loop loads its own data);
    - the detached PlacementGroupCleaner, which removes the run's placement group if its controller dies.
      It asks the State API, which needs the dashboard: on a Ray without one (local mode's default)
      it never sees the controller end and polls every second until Ray stops (seen: every trial's
      cleaner, each logging a "Failed to query" warning a second).
      Under Tune, callbacks.EndStoppedTrainRuns removes a stopped trial's group instead, and a
      dead driver's groups go with its job."""
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class SweepTorchTrainer(TorchTrainer):
        controller_name = ""  # set by the trial (trial.controller_name): how callbacks.EndStoppedTrainRuns finds it

        def __init__(self, *args, torch_config=None, **kwargs):
            fields = dataclasses.asdict(torch_config) if torch_config else {}
            super().__init__(*args, torch_config=LazyTorchConfig(**fields), **kwargs)

        def _create_default_callbacks(self) -> list:
            unused = (PlacementGroupCleanerCallback,) + (() if self.datasets else (DatasetsCallback,))
            return [c for c in super()._create_default_callbacks() if not isinstance(c, unused)]

        def _initialize_and_run_controller(self, **controller_init_kwargs) -> Result:
            return run_named_controller(self.controller_name, controller_init_kwargs)

    return SweepTorchTrainer


@dataclasses.dataclass
class LazyTorchConfig(BackendConfig):
    """Ray 2.60's TorchConfig (the same fields and backend, Ray's own _TorchBackend doing the work) from a module
    without torch. A Train controller unpickles its backend config as it starts, and TorchConfig's module imports
    torch (~1.5 s here) before the controller asks for its workers, while it needs torch only once they are up (to
    set up torch.distributed). Here the import starts in a thread when the controller first reads `backend_cls`
    (in its constructor) and runs beside the placement group and the workers' start. Workers import torch anyway."""

    backend: str | None = None
    init_method: str = "env"
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type:
        import_in_background("torch.distributed")
        return LazyTorchBackend

    @property
    def train_func_context(self) -> type:
        return TorchTrainContext

    @property
    def framework(self) -> TrainingFramework:
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TORCH

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def torch_backend() -> Backend:
    from ray.train.torch.config import _TorchBackend  # waits for import_in_background's torch, if still importing

    return _TorchBackend()


class LazyTorchBackend(Backend):
    """Ray's _TorchBackend (the process group's set-up and shutdown), imported when the controller first calls it."""

    share_cuda_visible_devices = True  # as _TorchBackend's

    def on_start(self, worker_group, backend_config) -> None:
        torch_backend().on_start(worker_group, backend_config)

    def on_shutdown(self, worker_group, backend_config) -> None:
        torch_backend().on_shutdown(worker_group, backend_config)

    def on_training_start(self, worker_group, backend_config) -> None:
        torch_backend().on_training_start(worker_group, backend_config)


class TorchTrainContext:
    """Ray's TorchConfigContextManager (a worker's CUDA device around the train function), imported by the worker
    that enters it: the controller unpickles the wrapped train function too."""

    def __enter__(self) -> None:
        from ray.train.torch.config import TorchConfigContextManager

        self.inner = TorchConfigContextManager()
        self.inner.__enter__()

    def __exit__(self, *exc) -> bool:
        return self.inner.__exit__(*exc)


_importing: dict[str, threading.Thread] = {}


def import_in_background(module: str) -> None:
    """Import `module` in a daemon thread, once per process; an import of it elsewhere waits for this one (Python's
    lock per module). Free of deadlock while `module` (here torch) imports nothing of Ray's."""
    if module not in sys.modules and module not in _importing:
        _importing[module] = threading.Thread(target=importlib.import_module, args=(module,), daemon=True,
                                              name=f"import {module}")
        _importing[module].start()


class TrainRunStopped(Exception):
    """The trial's Train controller was killed on purpose (callbacks.EndStoppedTrainRuns: Tune stopped the trial)."""


def run_named_controller(name: str, controller_init_kwargs: dict) -> Result:
    """DataParallelTrainer._initialize_and_run_controller of Ray 2.60 (which Tune runs in a thread, so without its
    SIGINT handler), with the controller named: when Tune stops a trial early (ASHA) it keeps the trial's process
    for the next trial (reuse_actors) and tells it nothing, while the Train run would go on training in it. The
    driver then kills the controller by name (its workers and placement group go with it), and the fit() waiting
    here raises TrainRunStopped, a stop told apart from a crash by Ray's own words for a ray.kill."""
    import ray
    from ray._common.constants import RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR
    from ray.exceptions import ActorDiedError
    from ray.train.v2._internal.constants import DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE, get_env_vars_to_propagate
    from ray.train.v2._internal.execution.controller import TrainController

    env_vars = get_env_vars_to_propagate()
    env_vars.setdefault(RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR, DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE)
    controller = ray.remote(num_cpus=0, label_selector={ray._raylet.RAY_NODE_ID_KEY: ray.get_runtime_context().get_node_id()},
                            runtime_env={"env_vars": env_vars})(TrainController)
    controller = controller.options(name=name or None).remote(**controller_init_kwargs)
    try:
        ray.get(controller.run.remote())
    except ActorDiedError as error:
        if killed_by_ray_kill(error):
            raise TrainRunStopped(name) from None
        raise
    return ray.get(controller.get_result.remote())


def killed_by_ray_kill(error: Exception) -> bool:
    """Whether a dead actor's error says ray.kill ended it (not a crash: Ray kept the reason only in its message)."""
    return "killed by `ray.kill`" in str(error)


def placement_group(hex_id: str) -> PlacementGroup:
    """A PlacementGroup handle from the hex id a Train worker reported."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    return PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id)))


def fit_noticing_interrupt(fit: Callable[[], ResultGrid]) -> tuple[ResultGrid, bool]:
    """(fit()'s results, whether Ctrl-C ended it). Tune 2.60 replaces the SIGINT handler during fit() and,
    on Ctrl-C, saves its state and returns as if done; its only trace is that it puts back the handler it
    replaced. So a handler of ours is installed first, and finding it back afterwards means Tune saw Ctrl-C."""
    def ours(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, ours)
    try:
        results = fit()
        return results, signal.getsignal(signal.SIGINT) is ours
    finally:
        signal.signal(signal.SIGINT, previous)


def cluster_address(address: str) -> str | None:
    """The HOST:PORT `ray.init(address=address)` would connect to, `auto` resolved as Ray resolves it (RAY_ADDRESS,
    else the last `ray start` on this machine, else a running Ray found by its process); None: no cluster to be
    found. Asked before a sweep prepares anything, so that a missing cluster is one line, not Ray's traceback."""
    from ray._private.services import canonicalize_bootstrap_address

    try:
        return canonicalize_bootstrap_address(address)
    except ConnectionError:  # `auto` and nothing running
        return None


@contextmanager
def ray_init_leaving_sigterm_alone() -> Iterator[None]:
    """ray.init (2.60) first puts in a SIGTERM handler of its own (sys.exit), which raised at whatever line Ray's
    start had reached: inside the logging module's at-fork callback (Ray forks its processes) the exception was
    swallowed ("Exception ignored"), the stop lost and logging's lock left taken, and the sweep hung, its thread
    opening the MLflow store waiting for that lock. Ray's setter does nothing in this block, so the handler of
    interrupts.stops_held stays, and the stop takes effect once the start has ended."""
    import ray._private.utils

    setter = ray._private.utils.set_sigterm_handler
    ray._private.utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray._private.utils.set_sigterm_handler = setter
