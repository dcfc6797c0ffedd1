"""`ui`: the MLflow UI for the tracking store, in a process group this command owns."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

from imdb_ray.cli.options import DEFAULT_URI, positive_int
from imdb_ray.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p_ui = sub.add_parser("ui", help="the MLflow UI for the tracking store (bound to 127.0.0.1)")
    p_ui.add_argument("--tracking-uri", help=f"the MLflow store to show (default $MLFLOW_TRACKING_URI, else {DEFAULT_URI})")
    p_ui.add_argument("--host", default="127.0.0.1", help="0.0.0.0 exposes it to the network: only on purpose")
    p_ui.add_argument("--port", type=int, default=5000, help="the port to serve on (default 5000; a taken one is refused)")
    p_ui.add_argument("-v", "--verbose", action="store_true", help="the server's own warnings too")
    p_ui.add_argument("--workers", type=positive_int("--workers"), default=1, help="server processes (default 1: one person's browser; "
                      "MLflow's own default of 4 costs seconds of start-up per process)")
    p_ui.set_defaults(run=run)


def run(args: argparse.Namespace, extra: list[str]) -> int:
    """`mlflow ui` in a process group of its own, which this command owns: SIGTERM or SIGINT (a
    supervisor's `kill PID`, Ctrl-C) stop the whole server tree, never leaving a piece running."""
    import signal
    import subprocess

    from imdb_ray import tracking

    uri = tracking.resolve_tracking_uri(args.tracking_uri)
    # the server would start, then die on a store it cannot open; and on a sqlite file that is not there it would
    # create one and show it empty, where the user mistyped a path or started in another folder
    tracking.check_reachable(uri, must_exist=True)
    check_port_free(args.host, args.port)
    # MLflow 3.17 would also start a job runner and seven job consumers (~275 MB each) for GenAI
    # features nothing here uses; they slow the start.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    print(f"MLflow UI for {uri} on http://{args.host}:{args.port}", flush=True)
    if not args.verbose:  # the server's library deprecation notices are not the user's to act on
        os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning,ignore::UserWarning")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
                               "--port", str(args.port), "--workers", str(args.workers)], start_new_session=True)
    stopped_by: list[int] = []

    def stop(signum, _frame) -> None:  # only signal here: the wait below returns once the server exits
        stopped_by.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = server.wait()
    finally:
        _stop_group(server)  # what is left of the tree, whatever ended the wait
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 128 + stopped_by[0] if stopped_by else code


def check_port_free(host: str, port: int) -> None:
    """A taken port is refused before the server starts (MLflow would log the clash and exit 0)."""
    import socket

    if not 0 < port < 65536:
        raise UserError(f"--port {port} must be in 1-65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise UserError(f"--port {port} on {host} is not free ({e.strerror}): another server holds it; "
                            "stop it or choose another --port") from None


def _stop_group(proc, grace_s: float = 10.0) -> None:
    """SIGTERM to a process group, SIGKILL to whatever of it is left after grace_s."""
    import signal
    import subprocess

    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is gone
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)  # the leader may exit before its workers: the next round finds them
