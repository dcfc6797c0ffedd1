"""`python -m imdb_ray ui` serves the MLflow UI for the store, on 127.0.0.1 only."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from mlflow.tracking import MlflowClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store_on_localhost(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.create_run(client.create_experiment("ui_check"), run_name="a-trial")
    port = _free_port()
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
