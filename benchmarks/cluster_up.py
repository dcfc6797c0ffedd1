"""`ray up` for real, on this machine, over SSH on loopback addresses only.

    sudo .venv/bin/python benchmarks/cluster_up.py            # -> results/cluster_up.md

What it does, timing each step:
  1. a throwaway user (the "remote" account), a throwaway SSH key, sshd listening on 127.0.0.1 only
     (apt installs openssh-server and rsync if they are missing: the only thing left behind);
  2. renders cluster-local.yaml for this machine: head 127.0.0.1, no worker, the throwaway user and key,
     and a local folder as the "shared" path. Every command comes from the real file;
  3. `ray get-auth-token --generate` and `ray up`; checks that a wrong token is refused; then the job the
     README gives: `RAY_AUTH_MODE=token ray job submit ... sweep sweeps/smoke.py --address auto`;
  4. checks the MLflow parent and child runs and the Ray results on the shared path;
  5. `ray down`, then checks that no process of the throwaway user is left (Ray included);
  6. stops sshd, removes the user, its home, the key and the shared folder.
Needs root (useradd, sshd on port 22: Ray's launcher has no SSH port setting) and a free port 22 on loopback.

No second node on 127.0.0.2: Ray itself runs several nodes on one machine (ray.cluster_utils, used by
tests/test_cluster.py), but the launcher runs `ray stop` on every host before `ray start` and at `ray
down`, and on one machine under one account that stops every node, the head included. Two hosts
would need two machines (or containers); multi-node behaviour is tested with cluster_utils instead.
"""
from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
USER, HEAD = "imdbray_up", "127.0.0.1"
SHARED = Path("/tmp/imdb_ray_up_shared")
RAY = Path(sys.executable).parent / "ray"
STEPS: list[tuple[str, float, str]] = []  # (step, seconds, what was seen)


@contextmanager
def step(name: str):
    start = time.perf_counter()
    print(f"[cluster_up] {name} ...", flush=True)
    seen: list[str] = []
    yield seen
    STEPS.append((name, time.perf_counter() - start, "; ".join(seen)))
    print(f"[cluster_up] {name}: {time.perf_counter() - start:.0f}s {'; '.join(seen)}", flush=True)


def sh(*cmd: str, env: dict | None = None, check: bool = True, timeout: float = 1800) -> str:
    """Run from the repository root: the config's file_mounts ("~/imdb_ray: .") are relative to it."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)[:200]} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def user_processes() -> list[str]:
    out = subprocess.run(["ps", "-u", USER, "-o", "pid=,args="], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def start_sshd(work: Path) -> subprocess.Popen:
    missing = [pkg for pkg, binary in (("openssh-server", "/usr/sbin/sshd"), ("rsync", "/usr/bin/rsync")) if not Path(binary).exists()]
    if missing:
        sh("apt-get", "install", "-y", "-q", *missing, env={"DEBIAN_FRONTEND": "noninteractive"})
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key"))
    (work / "sshd_config").write_text(
        f"ListenAddress {HEAD}:22\nHostKey {work / 'host_key'}\nPidFile {work / 'sshd.pid'}\n"
        f"AllowUsers {USER}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "AuthorizedKeysFile .ssh/authorized_keys\nStrictModes yes\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation directory
    return subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(work / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=open(work / "sshd.log", "w"))


def make_user(work: Path) -> Path:
    sh("useradd", "-m", "-s", "/bin/bash", USER)
    sh("usermod", "-p", "*", USER)  # no password, but not "locked" ("!"): sshd refuses locked accounts even for keys
    home = Path(pwd.getpwnam(USER).pw_dir)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "id_ed25519"), "-C", "imdb_ray cluster_up (throwaway)")
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text((work / "id_ed25519.pub").read_text())
    # This machine reaches PyPI through a local mirror and keeps the CPU torch wheel on disk: the
    # "remote" account gets the same pip settings a real host of this site would have.
    pip_conf = Path.home() / ".config/pip/pip.conf"
    if pip_conf.is_file():
        (home / ".config/pip").mkdir(parents=True, exist_ok=True)
        shutil.copy(pip_conf, home / ".config/pip/pip.conf")
    SHARED.mkdir(parents=True, exist_ok=True)
    sh("chown", "-R", f"{USER}:{USER}", str(home), str(SHARED))
    return home


def render(work: Path) -> Path:
    """cluster-local.yaml with this machine's address, user, key and shared path; commands unchanged."""
    config = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
    config["provider"].update(head_ip=HEAD, worker_ips=[])
    config["auth"] = {"ssh_user": USER, "ssh_private_key": str(work / "id_ed25519")}
    config["min_workers"] = config["max_workers"] = 0
    text = yaml.safe_dump(config, sort_keys=False).replace("/mnt/shared/imdb_ray", str(SHARED))
    path = work / "cluster-local.yaml"
    path.write_text(text)
    return path


def check_sweep(seen: list[str]) -> None:
    db = SHARED / "mlflow.db"
    con = sqlite3.connect(db)
    kinds = dict(con.execute("select t.value, count(*) from tags t where t.key = 'imdb_ray.kind' group by t.value").fetchall())
    children = con.execute("select count(*) from tags where key = 'mlflow.parentRunId'").fetchone()[0]
    finished = con.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    trials = sorted(p.name for p in (SHARED / "ray_results" / "smoke").glob("*") if (p / "result.json").exists())
    assert kinds.get("sweep") == 1 and children == 6, (kinds, children)
    assert len(trials) == 6, trials
    seen.append(f"MLflow ({db}): 1 parent run, {children} child runs, {finished} runs FINISHED; "
                f"Ray results: {len(trials)} trial folders under {SHARED / 'ray_results' / 'smoke'}")


def run() -> None:
    work = Path(tempfile.mkdtemp(prefix="imdb_ray_up_"))
    sshd = None
    config = None
    try:
        with step("sshd on loopback, throwaway user and key") as seen:
            home = make_user(work)
            sshd = start_sshd(work)
            time.sleep(1)
            seen.append(f"sshd on {HEAD}:22, user {USER} ({home})")
        config = render(work)
        with step("ray get-auth-token --generate") as seen:  # the README's first command: ~/.ray/auth_token, here
            existed = (Path.home() / ".ray" / "auth_token").exists()
            sh(str(RAY), "get-auth-token", "--generate")
            seen.append("the token this machine had" if existed else "a new token")
        with step(f"ray up (head {HEAD})") as seen:
            sh(str(RAY), "up", "-y", "--no-config-cache", str(config), timeout=3600)
            seen.append("rsync of the repository, make install, ray start --head")
        with step("token authentication is on") as seen:
            wrong = subprocess.run([str(RAY), "job", "list", "--address", f"http://{HEAD}:8265"], capture_output=True,
                                   text=True, env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "not-the-token"})
            assert wrong.returncode != 0, "the cluster took a wrong token"
            seen.append(f"a request with a wrong token is refused ({(wrong.stdout + wrong.stderr).strip().splitlines()[-1][:120]})")
        with step("ray job submit: sweeps/smoke.py on the cluster") as seen:
            out = sh(str(RAY), "job", "submit", "--address", f"http://{HEAD}:8265", "--", "bash", "-c",
                     "cd ~/imdb_ray && .venv/bin/python -m imdb_ray sweep sweeps/smoke.py --address auto",
                     env={"RAY_AUTH_MODE": "token"}, timeout=1800)
            summary = next((line for line in out.splitlines() if line.startswith("== smoke:")), "no summary line")
            assert "== smoke: 6 trials, 0 errored ==" in out, out[-3000:]
            seen.append(summary)
        with step("results on the shared path") as seen:
            check_sweep(seen)
        with step("ray down") as seen:
            sh(str(RAY), "down", "-y", str(config), timeout=600)
            config = None
            deadline = time.time() + 30  # the launcher's SSH master connection lingers 10 s (ControlPersist=10s)
            while user_processes() and time.time() < deadline:
                time.sleep(1)
            left = user_processes()
            assert not left, f"processes left after ray down: {left}"
            seen.append(f"no process of {USER} left, Ray's or any other (ps -u {USER} is empty "
                        f"{time.time() - deadline + 30:.0f} s after ray down returned)")
    finally:
        if config is not None:  # a failed step: take the cluster down anyway
            subprocess.run([str(RAY), "down", "-y", str(config)], capture_output=True, timeout=600)
        cleanup(sshd, work)


def cleanup(sshd: subprocess.Popen | None, work: Path) -> None:
    start = time.perf_counter()
    if sshd is not None:
        sshd.send_signal(signal.SIGTERM)
        sshd.wait(timeout=30)
    for pid_line in user_processes():  # nothing should be left; if something is, it goes with the user
        os.kill(int(pid_line.split()[0]), signal.SIGKILL)
    subprocess.run(["userdel", "-r", USER], capture_output=True)
    shutil.rmtree(SHARED, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    STEPS.append(("cleanup", time.perf_counter() - start, f"sshd stopped, user {USER} and its home removed, key and "
                  f"shared folder deleted"))


def write_report(path: Path, error: str | None) -> None:
    lines = ["# `ray up` over SSH on this machine", "",
             f"Command: `sudo .venv/bin/python benchmarks/cluster_up.py` (Ray {sh(str(RAY), '--version').split()[-1]}, "
             f"loopback only: head {HEAD}, no worker: see the script's docstring for why).", "",
             "| step | seconds | seen |", "|---|---:|---|"]
    lines += [f"| {name} | {seconds:.0f} | {seen} |" for name, seconds, seen in STEPS]
    lines += ["", f"Result: {'FAILED: ' + error if error else 'every step passed; nothing of the run is left on the machine'}.", ""]
    path.write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "cluster_up.md"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("cluster_up: run as root (it adds a user and starts sshd on port 22)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: still take the cluster down and clean up
    error = None
    try:
        run()
    except Exception as e:  # recorded, then raised: the report says which step failed
        error = f"{type(e).__name__}: {str(e)[:1500]}"
        raise
    finally:
        write_report(Path(args.out), error)
        print(f"[cluster_up] -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
