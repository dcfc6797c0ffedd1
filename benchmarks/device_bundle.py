"""What benchmarks/gpu_check.py needs on a lent GPU machine that the machine lacks, packed to travel with the tree.

The device tool (its README in the tool library) sends the repository's tracked files, plus the ignored paths a
call names in `carry`, at most 64 MiB in all per call, to a machine with no network. Its Python 3.12 holds torch,
transformers, peft, accelerate, pandas, pyarrow and more (DEVICE_HAS), but not Ray, MLflow, Optuna, gensim, pydantic
or bitsandbytes: without them only the checks that call torch directly could run there. This builds the rest:

    .venv/bin/python benchmarks/device_bundle.py                   # -> .device/part1/ ... and .device/CALLS.md
    .venv/bin/python benchmarks/device_bundle.py --verify          # the same for this machine's Python, run (verify)

1. The runtime's requirement closure, from this .venv's package metadata (markers evaluated for Linux x86-64 and
   the target Python), less DEVICE_HAS (but for the PINNED transformers and peft) and torch's own CUDA stack.
2. Each as a manylinux wheel for that Python (`pip download --no-deps`, cached under <out>/wheels).
3. Unpacked; what no check runs removed (PRUNE: Ray's Java jars, RLlib, Serve, LLM and dashboard UI; MLflow's UI;
   gensim's test data; bitsandbytes' libraries for CUDA 11/12 and ROCm: the device's torch is built for CUDA 13)
   and ELF files stripped of symbols. MiniLM's config and tokenizer (no weights: 87 MB) join as minilm-config/.
4. Packed into xz tarballs, each small enough to travel beside the tree (--budget-mib, less the tree's size).
   A call unpacks its part into /tmp/site, which stays while the machine stays warm; the last call runs the check
   with PYTHONPATH=/tmp/site. <out>/CALLS.md lists the calls.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from gpu_check import MINILM_FILES, minilm  # MiniLM as gpu_check reads it, less its weights (benchmarks/ is on the path)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = str(ROOT / ".device")
# The device image's Python packages (the device tool's KINDS.md, "Python packages already there"): not carried.
DEVICE_HAS = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless
optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl
zipp""".split()
NEVER = ("torch", "triton", "nvidia-")  # torch's CUDA stack: the image's own build, never replaced
# Carried although the image has a version: pyproject pins them (transformers 5.24 broke prefix tuning; the image's
# is older than any this project ran), and the rows should be of the versions the tests ran.
PINNED = ("transformers", "peft")
ROOTS = [("ray", {"tune", "train"}), ("mlflow", set()), ("optuna", set()), ("gensim", set()), ("pydantic", set()),
         ("datasets", set()), ("skops", set()), ("bitsandbytes", set()), *((name, set()) for name in PINNED)]
PRUNE = ["*.data", "ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client/build", "mlflow/server/js", "gensim/test",
         "bitsandbytes/libbitsandbytes_cuda11*", "bitsandbytes/libbitsandbytes_cuda12*", "bitsandbytes/libbitsandbytes_rocm*"]
# The last call's time limit (the device tool allows 600 s a call): the check's --deadline-s leaves 60 s of it to
# unpack its part, stop a running command (SIGTERM, then 30 s) and write the rows.
CHECK_S = 560
PLATFORMS = ["manylinux1_x86_64", "manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in range(17, 40)]


def requirements(roots: list[tuple[str, set[str]]], skip, python: str) -> list[str]:
    """name==version of the installed distributions `roots` need, transitively, from this environment's metadata, markers
    evaluated for Linux x86-64 and `python` (with each distribution's extras asked for); `skip(key)`: neither it nor
    what it needs, and a distribution not installed here is skipped too."""
    installed = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
    wanted: dict[str, set[str]] = {}
    stack = list(roots)
    while stack:
        name, extras = stack.pop()
        key = canonicalize_name(name)
        if skip(key) or key not in installed or (key in wanted and extras <= wanted[key]):
            continue
        wanted[key] = wanted.get(key, set()) | extras
        envs = [{"extra": e, "python_version": python, "sys_platform": "linux", "platform_system": "Linux",
                 "platform_machine": "x86_64"} for e in (wanted[key] or {""})]
        for req in map(Requirement, installed[key].requires or []):
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                stack.append((req.name, set(req.extras)))
    return sorted(f"{key}=={installed[key].version}" for key in wanted)


def closure(python: str) -> list[str]:
    """name==version of every distribution the ROOTS need that the device lacks (or that is PINNED)."""
    device = {canonicalize_name(n) for n in DEVICE_HAS} - set(PINNED)
    return requirements(ROOTS, lambda key: key in device or key.startswith(NEVER), python)


def download(pins: list[str], python: str, wheels: Path) -> list[Path]:
    """The wheels for `python` on Linux x86-64 (pip's cache and `wheels` make a second run cheap)."""
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    if subprocess.run([sys.executable, "-m", "pip", "download", "-qq", "--no-deps", "--only-binary=:all:", "--implementation",
                       "cp", "--python-version", python, *platforms, "-d", str(wheels), *pins]).returncode != 0:
        sys.exit(f"device_bundle: pip could not download the wheels for Python {python} (its error above); "
                 "this needs the package index")
    wanted = {(canonicalize_name(name), version) for name, version in (p.split("==") for p in pins)}
    return sorted(w for w in wheels.glob("*.whl") if tuple(map(str, parse_wheel_filename(w.name)[:2])) in wanted)


def unpack(wheels: list[Path], site: Path) -> None:
    """Wheels unpacked into `site` as pip --target would lay them out, less PRUNE, ELF files stripped."""
    import zipfile

    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                path = Path(archive.extract(info, site))
                if info.external_attr >> 16 & 0o111:  # a wheel keeps the executable bit (Ray's gcs_server, raylet)
                    path.chmod(0o755)
    for pattern in PRUNE:
        for path in site.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for elf in [p for p in site.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p)]:
        subprocess.run(["strip", "--strip-unneeded", str(elf)], check=False, capture_output=True)  # symbols: for debuggers


def is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def minilm_config(site: Path) -> None:
    """MiniLM's config and tokenizer (gpu_check's real-review rows tokenise with it; LoRA builds random weights)."""
    try:
        source = minilm()
    except RuntimeError as e:  # `make install` alone has no MiniLM: say what to install
        sys.exit(f"device_bundle: {e}")
    (site / "minilm-config").mkdir()
    for name in MINILM_FILES:
        shutil.copy(source / name, site / "minilm-config" / name)


def tree_bytes() -> int:
    """What every device call sends before any carried path: tracked and untracked-not-ignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True).stdout.split(b"\0")
    return sum((ROOT / name.decode()).stat().st_size for name in listed if name and (ROOT / name.decode()).is_file())


def pack(site: Path, out: Path, budget: int) -> list[Path]:
    """Each top-level entry of `site` as an xz tarball, the tarballs shared out into part folders of at most `budget`
    bytes each (largest first, first fit); the part folders."""
    staged = out / "staged"
    staged.mkdir(parents=True)
    for entry in sorted(site.iterdir()):
        with tarfile.open(staged / f"{entry.name}.tar.xz", "w:xz", preset=9) as tar:
            tar.add(entry, arcname=entry.name)
    balls = sorted(staged.iterdir(), key=lambda b: b.stat().st_size, reverse=True)
    if balls[0].stat().st_size > budget:
        sys.exit(f"device_bundle: {balls[0].name} alone is {balls[0].stat().st_size / 2**20:.1f} MiB, over the "
                 f"{budget / 2**20:.1f} MiB a call can carry beside the tree; prune more of it (PRUNE)")
    parts: list[list[Path]] = []
    for ball in balls:
        fit = next((p for p in parts if sum(b.stat().st_size for b in p) + ball.stat().st_size <= budget), None)
        fit.append(ball) if fit else parts.append([ball])
    folders = []
    for number, members in enumerate(parts, 1):
        folders.append(out / f"part{number}")
        folders[-1].mkdir()
        for ball in members:
            ball.rename(folders[-1] / ball.name)
    staged.rmdir()
    return folders


def calls_text(parts: list[Path], tree: int) -> str:
    """The device calls, one per part, the check in the last (run's arguments, as the device tool takes them)."""
    rel = lambda p: p.relative_to(ROOT) if p.is_relative_to(ROOT) else p  # noqa: E731
    lines = [f"# Device calls for benchmarks/gpu_check.py\n\nThe tree sends {tree / 2**20:.1f} MiB; each call carries one "
             "part beside it. Make the calls back to back: /tmp/site lasts while the machine stays warm.\n"]
    for number, part in enumerate(parts, 1):
        size = sum(b.stat().st_size for b in part.iterdir())
        unpack_cmd = f"mkdir -p /tmp/site && for f in {rel(part)}/*.tar.xz; do tar xJf $f -C /tmp/site || exit 1; done"
        if number == len(parts):  # the parts before, unpacked by the calls before, unless the machine went back between
            unpack_cmd += (" && { test -d /tmp/site/ray || { echo 'device_bundle: /tmp/site lacks Ray: the machine was given "
                           "back between the calls; make them all again'; exit 3; }; }"
                           " && export PYTHONPATH=/tmp/site:$PWD IMDB_RAY_MINILM_CONFIG=/tmp/site/minilm-config "
                           f"PYTHONUNBUFFERED=1 && python3 benchmarks/gpu_check.py --deadline-s {CHECK_S - 60} --out $OUT/gpu_check.md")
        lines.append(f"{number}. carry `[\"{rel(part)}\"]`, {size / 2**20:.1f} MiB, timeout_s "
                     f"{CHECK_S if number == len(parts) else 120}:\n\n    {unpack_cmd}\n")
    return "\n".join(lines)


def build(python: str, out: Path, budget_mib: float = 64.0) -> list[Path]:
    """The parts for `python` under `out`, and out/CALLS.md; the part folders."""
    for old in [*out.glob("part*"), out / "staged"]:
        shutil.rmtree(old, ignore_errors=True)
    pins = closure(python)
    print(f"[device_bundle] {len(pins)} distributions to carry (what the device lacks, and PINNED): {' '.join(pins)}", flush=True)
    wheels = download(pins, python, out / "wheels")
    tree = tree_bytes()
    budget = int(budget_mib * 2**20) - tree - 2**20  # a MiB spare: CALLS.md and what changes before the call
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        unpack(wheels, site)
        minilm_config(site)
        print(f"[device_bundle] unpacked, pruned, stripped; packing into parts of at most {budget / 2**20:.1f} MiB ...",
              flush=True)
        parts = pack(site, out, budget)
    (out / "CALLS.md").write_text(calls_text(parts, tree))
    return parts


def stand_in_pins(bundled: set[str]) -> list[str]:
    """What stands for the device image on this machine: the image's packages that this .venv has, with everything
    they require, less what the bundle carries (so neither Ray's optional [default] extras nor the test tools)."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return requirements([(name, set()) for name in DEVICE_HAS], lambda key: key in bundled, python)


def verify(out: Path) -> list[str]:
    """The bundle, built for this machine's Python, in a venv that stands for the device (stand_in_pins): gpu_check's
    dry run, the smoke sweep with trainer direct and ray_train, random MiniLM weights from its config and an int8 LoRA
    train on them; the steps that failed."""
    from gpu_check import ray_train_variant

    parts = build(f"{sys.version_info.major}.{sys.version_info.minor}", out)
    site, venv = out / "site", out / "stand-in"
    shutil.rmtree(site, ignore_errors=True)
    for ball in (b for part in parts for b in sorted(part.iterdir())):
        with tarfile.open(ball) as tar:
            tar.extractall(site, filter="tar")  # "tar": keeps the executable bits of Ray's binaries
    bundled = {canonicalize_name(p.split("==")[0]) for p in closure(f"{sys.version_info.major}.{sys.version_info.minor}")}
    pins = [p for p in stand_in_pins(bundled) if not p.startswith("torch==")]
    print(f"[device_bundle] the stand-in venv: torch and {len(pins)} more, none of them bundled", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-qq", "--no-deps"]
    torch = f"torch=={md.version('torch').split('+')[0]}"
    if subprocess.run([*pip, "--no-index", torch]).returncode != 0:  # as the Makefile: the local CPU wheel, else the CPU index
        subprocess.run([*pip, torch, "--index-url", "https://download.pytorch.org/whl/cpu"], check=True)
    subprocess.run([*pip, *pins], check=True)
    (out / "smoke_ray_train.py").write_text(ray_train_variant())
    py, work = str(venv / "bin" / "python"), ["--tracking-uri", f"sqlite:///{out}/verify.db", "--cache-dir", str(out / "cache")]
    steps = {"gpu_check --dry-run": [py, "benchmarks/gpu_check.py", "--dry-run"],
             "smoke sweep, direct": [py, "-m", "imdb_ray", "sweep", "sweeps/smoke.py", "--storage", str(out / "ray"), *work],
             "smoke sweep, ray_train": [py, "-m", "imdb_ray", "sweep", str(out / "smoke_ray_train.py"), "--storage",
                                        str(out / "ray_train"), *work],
             "random MiniLM weights": [py, "-c", "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; "
                                       f"from gpu_check import minilm_weights; print(minilm_weights(Path({str(out)!r})))"],
             "int8 LoRA on random MiniLM": [py, "-m", "imdb_ray", "train", "--model", "hf", "--checkpoint", str(out / "minilm-random"),
                                            "--peft", "lora", "--quantization", "int8", "--n-train", "200", "--n-test", "100",
                                            "--max-len", "64", "--epochs", "1", "--run-dir", str(out / "lora"), *work]}
    env = {**os.environ, "PYTHONPATH": f"{site}:{ROOT}", "IMDB_RAY_MINILM_CONFIG": str(site / "minilm-config")}
    failed = []
    for name, argv in steps.items():
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        last = (done.stdout.strip() or done.stderr.strip()).splitlines()[-1:] or [""]
        print(f"[device_bundle] verify: {name}: exit {done.returncode}; {last[0][:160]}", flush=True)
        failed += [name] if done.returncode else []
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="3.12", help="the device's Python (its image: 3.12)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the parts go (.device is git-ignored)")
    parser.add_argument("--budget-mib", type=float, default=64.0, help="what one device call carries, the tree included")
    parser.add_argument("--verify", action="store_true",
                        help="instead: build for this machine's Python under --out (default: a temporary folder) and run "
                             "gpu_check's software paths from it in a venv that stands for the device (a few minutes)")
    args = parser.parse_args()
    if args.verify:
        with tempfile.TemporaryDirectory(prefix="device_bundle_verify_") as tmp:
            failed = verify(Path(args.out).resolve() if args.out != DEFAULT_OUT else Path(tmp))
        sys.exit(f"device_bundle: verify failed: {', '.join(failed)}" if failed else 0)
    build(args.python, Path(args.out).resolve(), args.budget_mib)
    print((Path(args.out).resolve() / "CALLS.md").read_text())


if __name__ == "__main__":
    main()
