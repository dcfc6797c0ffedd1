"""What a run's numbers depend on beyond its config and seed: the library versions and the machine. `--version`
prints them; every sweep's and train run's MLflow run carries them as tags, and each trial's run those of the node it
ran on (sweep/trial.placement): the same seeds can train to other numbers on another torch build or CPU model.
Read from package metadata and the OS: nothing heavy is imported."""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

# the libraries whose versions decide a run's behaviour and numbers
VERSIONED = ("torch", "ray", "mlflow", "optuna", "transformers", "peft", "gensim")


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def library_versions() -> str:
    """'imdb_ray 0.1.0 (torch 2.13.0+cpu, ray 2.60.0, ...; Python 3.11.7)'."""
    libraries = ", ".join(f"{name} {package_version(name)}" for name in VERSIONED)
    return f"imdb_ray {package_version('imdb_ray')} ({libraries}; Python {sys.version.split()[0]})"


def machine_summary() -> str:
    """'x86_64, AMD EPYC 7B13, 2 CPUs', and the GPUs torch sees when torch is already loaded (never imported here)."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    parts = [platform.machine(), cpu, f"{os.cpu_count()} CPUs"]
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        parts.append(f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    return ", ".join(p for p in parts if p)


def run_tags() -> dict[str, str]:
    return {"imdb_ray.versions": library_versions(), "imdb_ray.machine": machine_summary()}
