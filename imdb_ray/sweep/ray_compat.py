"""Every use of a Ray internal, in one place, each checked against the Ray version it was written for.

imdb_ray uses Ray's public Tune and Train APIs everywhere else. What is here reaches past them, to work
around a behaviour of Ray 2.60 or to start fewer processes; `tests/test_ray_compat.py` fails on any other
Ray version, so an upgrade re-reads this file first (is each workaround still needed? does each name
still exist?).
"""
from __future__ import annotations

import logging
import signal
import subprocess
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from ray.train import Result
    from ray.train._internal.session import _TrainingResult as TrainingResult  # noqa: F401 (trial.py's hints)
    from ray.train.v2._internal.execution.controller import TrainController
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
    """TorchTrainer with its controller in the trial's process (run_controller_in_process), less two helper actors
    that Ray 2.60 starts for every Train run and a sweep's runs do not use; each is a Python process that imports
    Ray Data (~3-5 CPU-s on 2 cores), per trial:
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
        def _create_default_callbacks(self) -> list:
            unused = (PlacementGroupCleanerCallback,) + (() if self.datasets else (DatasetsCallback,))
            return [c for c in super()._create_default_callbacks() if not isinstance(c, unused)]

        def _initialize_and_run_controller(self, **controller_init_kwargs) -> Result:
            import ray

            if ray.get_runtime_context().get_actor_id() is None:  # a driver's fit(): Train's own controller actor
                return super()._initialize_and_run_controller(**controller_init_kwargs)
            return run_controller_in_process(controller_init_kwargs)  # a trial's, in Tune's trial process

    return SweepTorchTrainer


def run_controller_in_process(controller_init_kwargs: dict) -> Result:
    """DataParallelTrainer._initialize_and_run_controller of Ray 2.60, with the Train controller an object in the
    calling process (the trial's, which Tune keeps for the next trial: reuse_actors) instead of an actor process
    started for every trial, which then imported Ray Train and torch again; and the trial's reports go to Tune from
    here (trial.ReportToTune) instead of through a queue actor, one more process per trial. The run's workers and
    sync actor are the trial process's and end with it; its placement group outlives it (Ray frees a group made in
    an actor with the job), so callbacks.EndStoppedTrainRuns removes it. The workers' handle to their controller is
    the trial process's actor: a train function that asks it (ray.train.get_all_reported_checkpoints) fails.

    Tune stops a trial (ASHA) on a result, while this controller waits in that result's report (a function
    trial's reports are synchronous); when Tune ends the trial's thread (the next trial's reset, or the sweep's
    end) that report raises SystemExit, and the run's workers are shut down before it goes on up. (The controller's
    abort(), which ends the process it runs in with ray.actor.exit_actor, is not called here.)"""
    import asyncio

    from ray.train.v2._internal.execution.controller import TrainController

    controller = TrainController(**controller_init_kwargs)
    try:
        asyncio.run(controller.run())
    except BaseException:
        end_worker_group(controller)
        raise
    return controller.get_result()


def end_worker_group(controller: TrainController) -> None:
    """Shut down a controller's workers, sync actor and placement group, if it still has them (best effort: they
    may be dead already, their group removed by callbacks.EndStoppedTrainRuns)."""
    group = controller.get_worker_group()
    if group is not None and group.has_started():
        try:
            group.abort()
        except Exception as error:  # noqa: BLE001 - the trial ends either way; EndStoppedTrainRuns frees its group
            logging.getLogger(__name__).warning("ending a stopped trial's Train workers: %s", error)


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


def local_ray_processes() -> dict[str, subprocess.Popen]:
    """The GCS and raylet this process started as its local Ray (by name), for ray_watch to see them end; empty when
    it joined a cluster. Ray keeps the Popen of each process it starts on its node object; no public API names them."""
    from ray._private import ray_constants, worker

    node = worker._global_node
    if node is None or not node.head:
        return {}
    kinds = (ray_constants.PROCESS_TYPE_GCS_SERVER, ray_constants.PROCESS_TYPE_RAYLET)
    return {kind: info.process for kind in kinds for info in node.all_processes.get(kind, [])[:1]}


def shutdown_ray() -> None:
    """ray.shutdown(), a second sooner when this process started the Ray. Ray 2.60 stops the GCS before the
    autoscaler monitor, whose SIGTERM handler then writes its exit to the dead GCS until Ray's 1-s grace ends in
    SIGKILL (ray.shutdown 1.4 s; 0.3 s with the monitor gone first). A local Ray's monitor has no autoscaler to
    stop and nothing to save, so it gets the SIGKILL first. A joined cluster's processes are not this one's."""
    import ray
    from ray._private import worker

    node = worker._global_node
    if node is not None and node.head:
        node.kill_monitor(check_alive=False)
    ray.shutdown()
