"""SIGTERM is handled as Ctrl-C. It is how `kill`, `timeout`, SLURM and Kubernetes stop a job, and Python's default
ends the process on the spot; inside a sweep, Ray's own handler aborts the driver with a stack dump. Either way the
MLflow runs stayed RUNNING and nothing said how to continue. Routed to the SIGINT handler of the moment, a stopped
`train` marks its run KILLED and prints the command that resumes it, and a stopped sweep lets Tune save its state.
SIGHUP (the terminal closed: an SSH session dropped) is handled the same way, unless it is ignored, as `nohup` does."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

_stopped_by: int | None = None  # the stop signal that came (SIGTERM or SIGHUP), if one did: the exit code is 128 + it
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A command's lifetime (cli.main): SIGTERM and SIGHUP do what SIGINT would do at that moment (Ray Tune's graceful
    stop during a sweep's fit, KeyboardInterrupt elsewhere); the handlers before them are put back after. A signal
    ignored when the command starts stays ignored (`nohup`: the sweep is meant to outlive the terminal). Main thread only."""
    global _stopped_by
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    _stopped_by = None
    main = threading.current_thread() is threading.main_thread()
    handled = [s for s in STOP_SIGNALS if main and previous[s] not in (None, signal.SIG_IGN)]
    for s in handled:
        signal.signal(s, _as_interrupt)
    try:
        yield
    finally:
        for s in handled:
            signal.signal(s, previous[s])


@contextmanager
def stops_held() -> Iterator[None]:
    """A block not to be cut midway (Ray's start: an exception raised at whatever line it had reached could leave a
    lock taken, or be swallowed): SIGTERM, SIGHUP and Ctrl-C are held until it ends, then raised as the stop they are
    (KeyboardInterrupt; "terminated", 143 for SIGTERM). Main thread only; elsewhere no signal reaches the block."""
    global _stopped_by
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    ignored = {s for s in STOP_SIGNALS if signal.getsignal(s) == signal.SIG_IGN}  # nohup's SIGHUP: it stays ignored
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum))
                for s in (*STOP_SIGNALS, signal.SIGINT) if s not in ignored}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stopped_by = next((s for s in held if s in STOP_SIGNALS), _stopped_by)
        if held:
            raise KeyboardInterrupt


def terminated() -> bool:
    """Whether the stop came as SIGTERM or SIGHUP (exit code 143 or 129, not Ctrl-C's 130)."""
    return _stopped_by is not None


def stop_exit_code() -> int:
    """The exit code a shell reports for the process ended by the stop signal that came: 143 (SIGTERM), 129 (SIGHUP)."""
    return 128 + (_stopped_by or signal.SIGTERM)


def _as_interrupt(signum: int, frame: FrameType | None) -> None:
    global _stopped_by
    _stopped_by = signum
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):  # Python's default_int_handler raises KeyboardInterrupt; Tune's stops the sweep
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored (a background job of a script) or left to the OS: stop all the same
        raise KeyboardInterrupt
