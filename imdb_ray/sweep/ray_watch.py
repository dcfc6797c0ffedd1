"""When the local Ray a sweep started ends under it.

A stop sent to the driver's whole process group (`timeout`, `kill -- -PGID`) or cgroup (systemd, SLURM), or the
kernel's out-of-memory killer, can end Ray's GCS or raylet with the driver or before it. Ray's client in the driver
then waits 60 s on its next call into Ray (Tune's graceful stop makes several) and aborts the process: no line said
what had happened, and the sweep's MLflow runs stayed RUNNING. So a thread watches those processes; when one has
ended, the sweep is closed here without Ray (its open MLflow runs KILLED, the parent KILLED or FAILED, the resume
line printed) and the process exits. Tune's state on disk is as of its last save: `--resume` continues from there,
as it does after a SIGKILL. A joined cluster's processes are not this driver's to watch.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from typing import Callable, Iterator

import ray

from imdb_ray.interrupts import stop_exit_code, terminated
from imdb_ray.sweep.ray_compat import local_ray_processes
from imdb_ray.tracking import SweepRuns

POLL_S = 0.5  # how soon an ended GCS or raylet is seen: Ray's own client waits 60 s before it gives up
CLOSE_S = 20.0  # at most this long closing the sweep's MLflow runs before the process ends all the same


@contextlib.contextmanager
def watching_local_ray(on_lost: Callable[[str], None], poll_s: float = POLL_S,
                       end_process: Callable[[int], None] = os._exit) -> Iterator[None]:
    """While the block runs, a thread asks every `poll_s` whether this driver's local Ray (its GCS and raylet) still
    runs; once one has ended, on_lost(what ended) runs in that thread, then the process exits (exit_code())."""
    processes = local_ray_processes()
    gcs_address = ray.get_runtime_context().gcs_address if processes else ""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll_s):
            ended = [f"{name} {how_it_ended(code)}" for name, p in processes.items() if (code := p.poll()) is not None]
            # a SIGTERM to the GCS stops its server at once, its process only later: asked once this process has one
            if not ended and terminated() and not answers(gcs_address):
                ended = [f"gcs_server stopped answering at {gcs_address}"]
            if ended and not done.is_set():
                closing = threading.Thread(target=quietly, args=(on_lost, ", ".join(ended)), daemon=True)
                closing.start()
                closing.join(CLOSE_S)  # an MLflow server that does not answer retries for minutes: the process ends
                sys.stdout.flush(), sys.stderr.flush()
                end_process(exit_code())  # the main thread waits on Ray, and would for 60 s: it cannot be unwound
                return

    watcher = threading.Thread(target=watch, name="imdb_ray-ray-watch", daemon=True)
    if processes:
        watcher.start()
    try:
        yield
    finally:
        done.set()


def quietly(work: Callable[[str], None], argument: str) -> None:
    """work(argument); whatever it could not do (a store gone too), the process must still end."""
    with contextlib.suppress(BaseException):
        work(argument)


def answers(address: str) -> bool:
    """Whether something accepts a TCP connection at HOST:PORT within a second."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def how_it_ended(returncode: int) -> str:
    """'was killed by SIGTERM' for a negative return code (a signal), else 'exited with code N'."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def exit_code() -> int:
    """143 (129) when this process had a SIGTERM (SIGHUP) too: the stop reached Ray's processes as well (a group or
    cgroup kill, a closed terminal), as the CLI exits for such a stop; 1 when Ray ended by itself (OOM killer, crash)."""
    return stop_exit_code() if terminated() else 1


def close_without_ray(what_ended: str, storage: str, runs: SweepRuns | None, parent_id: str | None) -> None:
    """What run_sweep does on Ctrl-C, without Ray: the line saying what happened and how to go on, the trials' open
    MLflow runs KILLED, the parent KILLED after a stop (FAILED when Ray ended by itself), "terminated" after SIGTERM."""
    if runs is not None and parent_id:  # first: after a SIGHUP the terminal is gone, and printing to it fails
        runs.stop_running(parent_id, f"the sweep's local Ray ended under it ({what_ended})")
        runs.finish_parent(parent_id, status="KILLED" if terminated() else "FAILED")  # --resume: RUNNING again
    cause = ("the stop reached Ray's processes too: it was sent to the whole process group or cgroup" if terminated()
             else "not stopped by this command: the kernel's out-of-memory killer, or a crash; Ray's logs: /tmp/ray/session_latest/logs")
    print(f"[imdb_ray] the sweep's local Ray ended under it ({what_ended}; {cause}); Tune's state as last saved under "
          f"{storage} is kept: continue with the same command plus --resume", flush=True)
    if terminated():
        print("terminated", file=sys.stderr, flush=True)

