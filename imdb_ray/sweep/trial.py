"""What runs inside Ray's processes for one trial: the Tune trainable (`DirectTrial`, or the
function `make_trial` returns, which starts a TorchTrainer) and the Train worker loop (`train_worker`).

Apart from runner.py, and light on purpose: Ray pickles these by reference, so every trial process,
Train controller and Train worker imports this module, and each import it does not need costs each of
them seconds of CPU (runner.py pulls in Optuna, MLflow and the sweep spec). The controller never
trains: `imdb_ray.train` and the config (torch, scikit-learn) are imported where they are used.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from contextlib import nullcontext
from typing import TYPE_CHECKING, Callable

import ray
import ray.train
from ray import tune

from imdb_ray.sweep.packing import SHARE_KEY
from imdb_ray.sweep.ray_compat import function_trainable, sweep_torch_trainer, training_result_type

if TYPE_CHECKING:
    from imdb_ray.sweep.ray_compat import TrainingResult
    from imdb_ray.sweep.spec import Sweep


def use_assigned_cpus() -> None:
    """Torch threads = this process's CPU share, rounded: Ray floors it (OMP_NUM_THREADS), so a
    ray_train worker given 1.99 CPUs (2 less the trial function's 0.01) would train on one core of two."""
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus and os.environ.get("OMP_NUM_THREADS") == str(max(1, int(cpus))):  # Ray's floor, not a user's choice
        torch.set_num_threads(max(1, round(cpus)))


def current_placement_group() -> str:
    """Called in a Train worker: its worker group's placement group, for callbacks.EndStoppedTrainRuns."""
    group = ray.util.get_current_placement_group()
    return group.id.hex() if group else ""


def train_worker(config: dict) -> None:
    """Runs in every Ray Train worker: the same loop, reporting to Train (and so to Tune). `config`: the
    trial's flat Tune config, read here (the trainable that starts Train need not import the config)."""
    from imdb_ray.config import TrialConfig
    from imdb_ray.train import train

    use_assigned_cpus()

    cfg = TrialConfig.from_flat(config, strict=False)
    ctx = ray.train.get_context()
    resume = ray.train.get_checkpoint()
    group = current_placement_group()

    def report(metrics: dict, ckpt_dir: str | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir and ctx.get_world_rank() == 0 else None
        ray.train.report({**metrics, **placement(), "train_placement_group": group}, checkpoint=ckpt)

    with (resume.as_directory() if resume else nullcontext()) as resume_dir:
        train(cfg, on_epoch=report, resume_from=resume_dir, progress=False, **ddp_hooks())


def placement() -> dict[str, str]:
    """Where the trial runs, for its MLflow run's tags: Ray's node id, that node's machine (CPU model, GPUs) and
    its library versions (a cluster's nodes can differ from the driver's: another image, a pip install on one)."""
    return {"node_id": ray.get_runtime_context().get_node_id(), **_this_node()}


@functools.cache
def _this_node() -> dict[str, str]:
    """The process's machine and libraries as the tags a run carries (environment.run_tags), read once (a trial
    reports every epoch; torch is loaded by then, so its GPUs count)."""
    from imdb_ray.environment import run_tags

    return run_tags()


def ddp_hooks() -> dict:
    """train()'s DDP keywords in a Train worker of several (none for one): this rank's shard of the train batches
    (made by train(), length-bucketed) and Ray Train's model wrapping and device placement for the loader."""
    import ray.train.torch

    ctx = ray.train.get_context()
    if ctx.get_world_size() == 1:
        return {}
    return {"shard": (ctx.get_world_rank(), ctx.get_world_size()), "wrap_model": ray.train.torch.prepare_model,
            "wrap_loader": lambda loader: ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)}


def direct_trial(config: dict) -> None:
    """A Tune function trainable that runs the loop in its own process."""
    from imdb_ray.config import TrialConfig
    from imdb_ray.train import train

    use_assigned_cpus()

    def report(metrics: dict, ckpt_dir: str | None) -> None:
        metrics = {**metrics, **placement()}
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)

    resume = tune.get_checkpoint()
    with (resume.as_directory() if resume else nullcontext()) as resume_dir:
        train(TrialConfig.from_flat(config, strict=False), on_epoch=report, resume_from=resume_dir, progress=False)


class DirectTrial(function_trainable(direct_trial)):
    """direct_trial, restorable when the driver died between Tune deleting a trial's older checkpoint
    (CheckpointConfig(num_to_keep=1)) and saving the experiment state that names the newer one: the
    state then names a folder that is gone, and Ray 2.60 fails the trial ("Could not recover from
    checkpoint as it does not exist on storage anymore"). The newest checkpoint on storage is moved to the
    recorded name (so Tune's own bookkeeping stays true) and the trial resumes after its epoch."""

    def restore(self, checkpoint_path):
        if isinstance(checkpoint_path, training_result_type()):
            checkpoint_path = newest_on_storage(checkpoint_path)
        return super().restore(checkpoint_path)


def newest_on_storage(recorded: TrainingResult) -> TrainingResult:
    """`recorded` if its folder exists, else the trial's newest checkpoint renamed to it, with its epoch
    as Tune's iteration (ASHA's clock and MLflow's steps go on from there, no epoch twice)."""
    from pyarrow.fs import FileSelector, FileType

    from imdb_ray.checkpoint import checkpoint_epoch

    fs, path = recorded.checkpoint.filesystem, recorded.checkpoint.path
    if fs.get_file_info(path).type != FileType.NotFound:
        return recorded
    parent = os.path.dirname(path)
    found = [i.path for i in fs.get_file_info(FileSelector(parent, allow_not_found=True)) if os.path.basename(i.path).startswith("checkpoint_")]
    if not found:
        return recorded  # nothing to recover from: Tune reports the loss in its own words
    fs.move(newest := max(found), path)  # Tune's names are checkpoint_<6-digit index>: the largest is the newest
    with tune.Checkpoint(path, filesystem=fs).as_directory() as folder:
        epoch = checkpoint_epoch(folder)
    print(f"[imdb_ray] {parent}: resuming after epoch {epoch} from {os.path.basename(newest)} "
          f"(the checkpoint the experiment state named was already replaced)", flush=True)
    return training_result_type()(checkpoint=tune.Checkpoint(path, filesystem=fs),
                           metrics={**recorded.metrics, "training_iteration": epoch})


def scaling_config(sweep: Sweep, gpus: float | None = None) -> ray.train.ScalingConfig:
    """Ray Train's resources for one trial: workers_per_trial workers, each with its CPU share and its GPU share
    (`gpus`: a retried trial's grown share, else the sweep's)."""
    gpus = sweep.gpus_per_worker if gpus is None else gpus
    return ray.train.ScalingConfig(num_workers=sweep.workers_per_trial, use_gpu=gpus > 0,
                                   resources_per_worker={"CPU": sweep.cpus_per_worker, **({"GPU": gpus} if gpus else {})})


CHECKPOINT_PATH_KEY = "checkpoint_path"  # where a ray_train trial's result names its checkpoint (as Ray's TuneReportCallback)


class ReportToTune(ray.train.UserCallback):
    """Ray Train's reports (rank 0's metrics, and where its checkpoint was saved) to the Tune trial, from the Train
    controller, which runs in the trial's process (ray_compat.run_controller_in_process): Ray's TuneReportCallback
    sends them through a queue actor, a process per trial, for a controller in a process of its own."""

    def after_report(self, run_context, metrics: list[dict], checkpoint: ray.train.Checkpoint | None) -> None:
        tune.report({**metrics[0], **({CHECKPOINT_PATH_KEY: checkpoint.path} if checkpoint else {})})


def make_trial(sweep: Sweep, storage: str) -> type | Callable[[dict], None]:
    """The Tune function trainable for this sweep (Ray's pattern for Train under Tune in 2.60: a
    function that builds a TorchTrainer and reports to Tune from a Train callback)."""
    if sweep.trainer == "direct":
        return DirectTrial
    scaling, max_failures = scaling_config(sweep), sweep.max_failures  # torch's backend: TorchTrainer's (nccl on GPUs, else gloo)
    cpus = sweep.cpus_per_worker

    def ray_train_trial(config: dict) -> None:
        # When Tune ends this thread (a stopped trial's process reused for the next), its Train run's workers are
        # shut down first (up to 5 s for their hooks, Ray's patience), longer than the 2 s Tune waits by default.
        os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "30")
        context = tune.get_context()
        grown = config.get(SHARE_KEY)  # set by callbacks.GrowGpuShareOnOOM when a worker ran out of GPU memory
        trainer = sweep_torch_trainer()(
            train_worker, train_loop_config=config,
            scaling_config=scaling if grown is None else dataclasses.replace(
                scaling, resources_per_worker={"CPU": cpus, "GPU": grown}),
            run_config=ray.train.RunConfig(
                name=f"{context.get_experiment_name()}-{context.get_trial_id()}", storage_path=storage,
                callbacks=[ReportToTune()], failure_config=ray.train.FailureConfig(max_failures=max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)),
        )
        trainer.fit()

    return ray_train_trial
