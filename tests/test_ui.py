"""`python -m imdb_ray ui` serves the MLflow UI for the store, on 127.0.0.1 only."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request

from mlflow.tracking import MlflowClient

from helpers import free_port


def test_ui_serves_the_store_on_localhost(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.create_run(client.create_experiment("ui_check"), run_name="a-trial")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "imdb_ray", "ui", "--tracking-uri", uri, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, body = time.time() + 90, None
        while time.time() < deadline and body is None:
            time.sleep(1)
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
                                             data=b'{"max_results": 10}', headers={"Content-Type": "application/json"})
                body = urllib.request.urlopen(req, timeout=5).read().decode()
            except OSError:
                continue
        assert body is not None and "ui_check" in body
        # bound to loopback only: nothing listens on the machine's other addresses
        if shutil.which("ss"):
            listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
            ours = [line for line in listening.splitlines() if f":{port} " in line]
            assert ours and all("127.0.0.1" in line for line in ours), ours
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_ui_stopped_with_kill_leaves_nothing_running(tmp_path):
    """`kill PID` of the launcher (what a supervisor or script does) stops the whole MLflow server tree."""
    import os
    import signal

    import psutil

    from helpers import port_open, record_row, wait_for

    port = free_port()
    launcher = subprocess.Popen([sys.executable, "-m", "imdb_ray", "ui", "--tracking-uri", f"sqlite:///{tmp_path}/ui.db",
                                 "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), 90, "the MLflow UI")
        tree = psutil.Process(launcher.pid).children(recursive=True)
        assert tree, "the UI runs in child processes"
        launcher.send_signal(signal.SIGTERM)  # the launcher alone, not its group
        assert launcher.wait(timeout=30) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, [p.cmdline() for p in alive]
        assert not port_open(port)
    finally:
        if launcher.poll() is None:
            os.kill(launcher.pid, signal.SIGKILL)
    record_row("Safe default", "`ui` stopped with `kill PID` (SIGTERM to the launcher only)",
               f"the launcher stopped the server's whole process tree ({len(tree)} processes), nothing left running, "
               "the port closed; MLflow's job consumers are not started", "-")
