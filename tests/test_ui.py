"""`python -m imdb_ray ui` serves the MLflow UI for the store, on 127.0.0.1 only, and `kill PID` of the
launcher stops all of it. One server for both checks (an MLflow server start is ~20 s on 2 cores)."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
from mlflow.tracking import MlflowClient

from helpers import free_port, fresh_store, port_open, record_row


def search_experiments(port: int) -> str | None:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
                                 data=b'{"max_results": 10}', headers={"Content-Type": "application/json"})
    try:
        return urllib.request.urlopen(req, timeout=5).read().decode()
    except OSError:
        return None


def test_ui_serves_the_store_on_localhost_and_stops_whole_with_kill(tmp_path):
    uri = fresh_store(tmp_path)
    client = MlflowClient(uri)
    client.create_run(client.create_experiment("ui_check"), run_name="a-trial")
    port = free_port()
    launcher = subprocess.Popen([sys.executable, "-m", "imdb_ray", "ui", "--tracking-uri", uri, "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, body = time.time() + 90, None
        while time.time() < deadline and body is None:
            time.sleep(1)
            body = search_experiments(port)
        assert body is not None and "ui_check" in body
        # bound to loopback only: nothing listens on the machine's other addresses
        if shutil.which("ss"):
            listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
            ours = [line for line in listening.splitlines() if f":{port} " in line]
            assert ours and all("127.0.0.1" in line for line in ours), ours
        # `kill PID` of the launcher (what a supervisor or script does) stops the whole MLflow server tree
        tree = psutil.Process(launcher.pid).children(recursive=True)
        assert tree, "the UI runs in child processes"
        launcher.send_signal(signal.SIGTERM)  # the launcher alone, not its group
        assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, [p.cmdline() for p in alive]
        assert not port_open(port)
    finally:  # whatever failed above: nothing of the server outlives the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    record_row("Safe default", "`ui` stopped with `kill PID` (SIGTERM to the launcher only)",
               f"the launcher stopped the server's whole process tree ({len(tree)} processes), nothing left running, "
               "the port closed; MLflow's job consumers are not started", "-")
