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
    """A command's lifetime (cli.main): SIGTERM does what SIGINT would do at that moment (Ray Tune's graceful stop
    during a sweep's fit, KeyboardInterrupt elsewhere); the handler before it is put back after. Main thread only."""
    previous = signal.getsignal(signal.SIGTERM)
    _terminated.clear()
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.signal(signal.SIGTERM, _as_interrupt)
    try:
        yield
    finally:
        if previous is not None and main:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def stops_held() -> Iterator[None]:
    """A block not to be cut midway (Ray's start: an exception raised at whatever line it had reached could leave a
    lock taken, or be swallowed): SIGTERM and Ctrl-C are held until it ends, then raised as the stop they are
    (KeyboardInterrupt; "terminated", 143 for SIGTERM). Main thread only; elsewhere no signal reaches the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if signal.SIGTERM in held:
            _terminated.set()
        if held:
            raise KeyboardInterrupt


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
