"""How many trials share one GPU, from a trial's peak memory measured on the sweep's own settings.

A classic trial uses well under 1 GiB of a 80-140 GiB GPU (results/gpu_check.md), so one trial per GPU leaves it
idle; too many and they run out of memory. `--dry-run` on a CUDA machine trains a few real batches per model
(sweep/cost.py), reads the peak the caching allocator reached, and says how many trials fit with a margin:
the sweep file's `gpus_per_worker` is then 1/that (Ray packs fractions per GPU).
"""
from __future__ import annotations

from typing import Callable

CONTEXT_BYTES = 512 * 2**20  # each trial process's CUDA context and library workspaces: not in max_memory_allocated
MARGIN = 1.5  # the dry-run's batches are not the longest an epoch draws, and the caching allocator fragments
MOST_PER_GPU = 8  # beyond this, feeding the GPU from the CPUs is the limit, not memory


def trials_per_gpu(peak_bytes: int, gpu_bytes: int) -> int:
    """Trials of this peak that fit on one GPU of `gpu_bytes`, with the margin and each one's CUDA context."""
    return max(1, min(MOST_PER_GPU, int(gpu_bytes // (peak_bytes * MARGIN + CONTEXT_BYTES))))


def measure_peak_bytes(run: Callable[[], object]) -> int | None:
    """Run `run` and return the peak GPU memory it allocated; None without CUDA (nothing to measure)."""
    import torch

    if not torch.cuda.is_available():
        run()
        return None
    torch.cuda.reset_peak_memory_stats()
    run()
    return int(torch.cuda.max_memory_allocated())


OUT_OF_GPU_MEMORY = ("OutOfMemoryError", "CUDA out of memory")  # torch's exception name and its message
SHARE_KEY = "gpus_per_worker"  # in a retried trial's config: the grown GPU share (absent: the sweep's own)


def ran_out_of_gpu_memory(error_text: str | None) -> bool:
    """Whether a trial's latest failure (Tune's error file appends one block per failure) was CUDA running out
    of memory, and not an ordinary crash or host memory (a MemoryError is a config too big for any GPU share)."""
    latest = (error_text or "").rsplit("Failure # ", 1)[-1]
    return any(marker in latest for marker in OUT_OF_GPU_MEMORY)


def grown_share(share: float) -> float | None:
    """The GPU share to retry an out-of-memory trial with: twice its last, up to a whole GPU, so Ray packs half
    as many beside it. None when it already had a whole GPU (then more sharing was not the cause)."""
    return min(1.0, 2 * share) if 0 < share < 1 else None


def packing_line(peak_bytes: int, gpu_bytes: int, gpus_per_worker: float) -> str:
    """What the dry-run says: the measured peak, how many trials fit, and whether the sweep packs more."""
    fit = trials_per_gpu(peak_bytes, gpu_bytes)
    line = (f"    GPU packing: peak {peak_bytes / 2**30:.2f} GiB per trial (the largest measured) -> {fit} trial(s) per "
            f"{gpu_bytes / 2**30:.0f} GiB GPU with a {MARGIN}x margin: gpus_per_worker={1 / fit:.4g}")
    if 0 < gpus_per_worker < 1 and round(1 / gpus_per_worker) > fit:
        line += f" (this sweep's {gpus_per_worker:g} packs {round(1 / gpus_per_worker)}: more than fit)"
    return line
