"""SIGTERM is handled as Ctrl-C. It is how `kill`, `timeout`, SLURM and Kubernetes stop a job, and Python's default
ends the process on the spot; inside a sweep, Ray's own handler aborts the driver with a stack dump. Either way the
MLflow runs stayed RUNNING and nothing said how to continue. Routed to the SIGINT handler of the moment, a stopped
`train` marks its run KILLED and prints the command that resumes it, and a stopped sweep lets Tune save its state."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

_terminated = threading.Event()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A command's lifetime (cli.main): SIGTERM handled as Ctrl-C, the handler before it put back after."""
    previous = signal.getsignal(signal.SIGTERM)
    _terminated.clear()
    treat_sigterm_as_interrupt()
    try:
        yield
    finally:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def treat_sigterm_as_interrupt() -> None:
    """From now on SIGTERM does what SIGINT would do at that moment (Ray Tune's graceful stop during a sweep's
    fit, KeyboardInterrupt elsewhere). Again after `ray.init` (through_ray_init). Main thread only."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_interrupt)


@contextmanager
def through_ray_init() -> Iterator[None]:
    """Around `ray.init`: it puts in Ray's own SIGTERM handler (`sys.exit(15)`) before starting Ray's processes, so
    a SIGTERM in the seconds that takes would end the command with no line; it becomes the stop ours would have
    made (KeyboardInterrupt: "terminated", 143; Ray's atexit stops what it had started). Ours is put back after."""
    try:
        yield
    except SystemExit as e:
        if e.code != signal.SIGTERM:
            raise
        _terminated.set()
        raise KeyboardInterrupt from None
    finally:
        treat_sigterm_as_interrupt()


def terminated() -> bool:
    """Whether the stop came as SIGTERM (exit code 143, not Ctrl-C's 130)."""
    return _terminated.is_set()


def _as_interrupt(signum: int, frame: FrameType | None) -> None:
    _terminated.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):  # Python's default_int_handler raises KeyboardInterrupt; Tune's stops the sweep
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored (a background job of a script) or left to the OS: stop all the same
        raise KeyboardInterrupt
