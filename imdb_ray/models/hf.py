"""Pretrained encoders from Hugging Face transformers, with PEFT methods as configuration.

Registered names: `bert`, `distilbert`, `roberta`, `deberta_v3`, `modernbert` (each with its real
default checkpoint) and `hf` (any AutoModelForSequenceClassification checkpoint or local folder).

- init="pretrained" loads the weights; init="scratch" builds the same architecture from its config
  with random weights.
- peft="lora" | "prompt_tuning" | "p_tuning" | "prefix_tuning" wraps the model with the peft library.
  The classification head and every module the checkpoint did not provide (e.g. DeBERTa's pooler,
  randomly initialised) stay fully trainable.
- quantization="int8" | "nf4" loads the base weights through bitsandbytes for LoRA (QLoRA style),
  the head and new modules kept in full precision.

Offline mirrors: set IMDB_RAY_HF_MIRROR=/models and `microsoft/deberta-v3-base` is read from
/models/microsoft/deberta-v3-base when that folder exists.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from imdb_ray.contracts import Dropout, Positive
from imdb_ray.errors import UserError
from imdb_ray.models.registry import register_model
from imdb_ray.text import unloadable

DEFAULT_CHECKPOINTS = {
    "bert": "bert-base-uncased",
    "distilbert": "distilbert-base-uncased",
    "roberta": "roberta-base",
    "deberta_v3": "microsoft/deberta-v3-base",
    "modernbert": "answerdotai/ModernBERT-base",
}
PEFT_METHODS = ("none", "lora", "prompt_tuning", "p_tuning", "prefix_tuning")
PeftMethod = Literal[PEFT_METHODS]
# LoRA targets where peft has no default for the architecture (peft's own table covers the rest).
LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"], "modernbert": ["Wqkv"]}
# Prefix tuning feeds past key/values into attention; these architectures take none.
NO_PREFIX_TUNING = {"deberta-v2", "distilbert", "modernbert"}


def resolve_checkpoint(name: str) -> str:
    mirror = os.environ.get("IMDB_RAY_HF_MIRROR")
    if mirror and (Path(mirror) / name).is_dir():
        return str(Path(mirror) / name)
    return name


def available_offline(checkpoint: str) -> bool:
    """Whether `checkpoint` loads without the network: a folder (or IMDB_RAY_HF_MIRROR's copy of it), or a hub
    name whose config.json is already in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    path = resolve_checkpoint(checkpoint)
    if Path(path).is_dir():
        return True
    try:
        return isinstance(try_to_load_from_cache(path, "config.json"), str)
    except ValueError:  # not a valid hub name either (HFValidationError)
        return False


def check_checkpoint(checkpoint: str) -> None:
    """Refuse, without the network, a checkpoint that can never load: a folder with no model config, a name that is
    neither a folder nor a hub id, or a hub id missing from the cache while the hub is off (HF_HUB_OFFLINE=1)."""
    from huggingface_hub import is_offline_mode
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    path = Path(resolve_checkpoint(checkpoint))
    if path.is_dir():
        if not any((path / name).is_file() for name in ("config.json", "adapter_config.json")):
            raise UserError(f"checkpoint {checkpoint!r}: the folder has no config.json; give a folder that "
                            "save_pretrained wrote, or a hub name")
        return
    try:
        validate_repo_id(str(path))
    except HFValidationError:
        raise UserError(f"checkpoint {checkpoint!r}: no such folder, and not a Hugging Face hub name "
                        "(like bert-base-uncased or org/name)") from None
    if is_offline_mode() and not available_offline(checkpoint):
        raise UserError(f"checkpoint {checkpoint!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                        f"`hf download {checkpoint}` where the hub is reachable, or give a local folder")


def needs_download(checkpoint: str, timeout_s: float = 10.0) -> bool:
    """Whether loading `checkpoint` downloads it: False when it is on this machine. Otherwise the hub is asked once for
    its config, without retries, and refused in one line when nothing answers (no network, a firewall), where
    huggingface_hub retries each file with back-off: 49 s and 23 warning lines measured here before the same refusal.
    A hub that answers, even with an error, is left to from_pretrained."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if available_offline(checkpoint):
        return False
    try:
        validate_repo_id(checkpoint)
    except HFValidationError:  # a folder that is not there (any more): from_pretrained says so
        return True
    try:
        get_hf_file_metadata(hf_hub_url(checkpoint, "config.json"), timeout=timeout_s)
    except HfHubHTTPError:  # it answered: no such repository, gated, rate limited
        return True
    except Exception as e:  # nothing answered: DNS, refused, timed out
        why = f"{type(e).__name__}: {str(e).strip().splitlines()[0]}" if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint {checkpoint!r} is not on this machine and the Hugging Face hub ({constants.ENDPOINT}) "
                        f"cannot be reached ({why}); give a local folder, set IMDB_RAY_HF_MIRROR, or `hf download "
                        f"{checkpoint}` where the hub is reachable") from None
    return True


def max_positions(path: str) -> int | None:
    """How many tokens a checkpoint's table of absolute positions covers (a longer input fails in its embeddings);
    None where positions are relative (DeBERTa-v3) or rotary (ModernBERT) and have no table."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError):  # no model config here (an adapter's folder): nothing to check against
        return None
    if config.model_type == "modernbert" or getattr(config, "position_biased_input", True) is False:
        return None
    table = getattr(config, "max_position_embeddings", None)
    if table and "roberta" in config.model_type:  # positions start after the padding id (RoBERTa's 514 -> 512)
        table -= config.pad_token_id + 1
    return table


def model_type_of(checkpoint: str) -> str:
    """The architecture (config.model_type), from a local config.json or, offline, from the name."""
    config = Path(resolve_checkpoint(checkpoint)) / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text()).get("model_type")
        except (ValueError, AttributeError):  # not JSON, not UTF-8, not an object
            model_type = None
        if not isinstance(model_type, str) or not model_type:
            raise UserError(f"checkpoint {checkpoint!r}: {config} names no model_type (the architecture, which "
                            "save_pretrained writes there); give a folder that save_pretrained wrote, or a hub name")
        from transformers import CONFIG_MAPPING, __version__

        if model_type not in CONFIG_MAPPING:
            raise UserError(f"checkpoint {checkpoint!r}: model_type {model_type!r} is no architecture transformers "
                            f"{__version__} knows; upgrade transformers, or give another checkpoint")
        return model_type
    name = checkpoint.lower()
    for key, model_type in (("modernbert", "modernbert"), ("deberta-v3", "deberta-v2"), ("deberta-v2", "deberta-v2"),
                            ("deberta", "deberta"), ("distilbert", "distilbert"), ("roberta", "roberta"), ("bert", "bert")):
        if key in name:
            return model_type
    return "unknown"


def flash_attention_usable() -> bool:
    return importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()


def attention_kwargs(attention: str) -> dict:
    """transformers' attn_implementation: `auto` is FlashAttention 2 where flash-attn is installed and a GPU is
    visible, else transformers' own default (PyTorch SDPA for the models that have it, eager for the rest)."""
    if attention == "auto":
        return {"attn_implementation": "flash_attention_2"} if flash_attention_usable() else {}
    return {"attn_implementation": attention}


class HFClassifier(nn.Module):
    """A transformers sequence classifier (optionally PEFT-wrapped) returning (logits, features)."""

    def __init__(self, num_classes: int = 2, *, checkpoint: str = "bert-base-uncased",
                 init: Literal["pretrained", "scratch"] = "pretrained", peft: PeftMethod = "none", lora_r: Positive = 8,
                 lora_alpha: Positive = 16, lora_dropout: Dropout = 0.1, num_virtual_tokens: Positive = 20,
                 prompt_init_text: str | None = None, encoder_hidden_size: Positive = 128,
                 quantization: Literal["none", "int8", "nf4"] = "none", engine: Literal["torch", "unsloth"] = "torch",
                 attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"):
        super().__init__()
        self.validate_args(checkpoint=checkpoint, init=init, peft=peft, quantization=quantization, engine=engine,
                           attention=attention)
        from transformers import AutoConfig, AutoModelForSequenceClassification

        path = resolve_checkpoint(checkpoint)
        try:
            if engine == "unsloth":
                model, new_modules = _load_unsloth(path, num_classes, quantization, lora_r, lora_alpha, lora_dropout), set()
            elif init == "scratch":
                config = AutoConfig.from_pretrained(path, num_labels=num_classes)
                model = AutoModelForSequenceClassification.from_config(config, **attention_kwargs(attention))
                new_modules: set[str] = set()
            else:
                kwargs = {"num_labels": num_classes, **attention_kwargs(attention)}
                if quantization != "none":
                    kwargs["quantization_config"] = _bnb_config(quantization)
                model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kwargs)
                new_modules = {k.rsplit(".", 1)[0] for k in info["missing_keys"]}
        except OSError as e:
            raise unloadable(checkpoint, e) from None
        self.model_type = model.config.model_type
        self.num_layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layers", 0)
        head = _classifier_linear(model, num_classes)
        if peft != "none" and engine != "unsloth":
            model = _wrap_peft(model, peft, self.model_type, new_modules, quantization, lora_r=lora_r,
                               lora_alpha=lora_alpha, lora_dropout=lora_dropout, num_virtual_tokens=num_virtual_tokens,
                               prompt_init_text=prompt_init_text, tokenizer_path=path,
                               encoder_hidden_size=encoder_hidden_size)
            head = _classifier_linear(model, num_classes)  # peft keeps a trainable copy of the head
        self.model = model
        self._features: torch.Tensor | None = None
        # The pooled vector the classifier reads is the input of its last Linear (all architectures).
        head.register_forward_pre_hook(lambda _module, args: setattr(self, "_features", args[0]))

    @staticmethod
    def validate_args(**args) -> None:
        """Refuse what cannot work before any trial starts (called by config validation too)."""
        checkpoint = args.get("checkpoint", "bert-base-uncased")
        check_checkpoint(checkpoint)
        init, peft, quant = args.get("init", "pretrained"), args.get("peft", "none"), args.get("quantization", "none")
        model_type = model_type_of(checkpoint)
        if peft == "prefix_tuning" and model_type in NO_PREFIX_TUNING:
            raise UserError(f"peft='prefix_tuning' does not work with {checkpoint} ({model_type}: its attention takes no "
                            "past key/values); use lora, prompt_tuning or p_tuning")
        if args.get("attention") == "flash_attention_2" and not flash_attention_usable():
            raise UserError("attention='flash_attention_2' needs an NVIDIA GPU and the flash-attn package; "
                            "use attention='auto' (sdpa where the model has it)")
        engine = args.get("engine", "torch")
        if engine == "unsloth":
            if not torch.cuda.is_available():
                raise UserError("engine='unsloth' needs an NVIDIA GPU with CUDA, and none is visible here; use engine='torch'")
            if importlib.util.find_spec("unsloth") is None:
                raise UserError("engine='unsloth' needs unsloth: pip install -e '.[gpu]' on the GPU machine (README: Unsloth)")
            if peft != "lora" or init != "pretrained" or quant == "int8":
                raise UserError("engine='unsloth' is a LoRA path: use peft='lora', init='pretrained', quantization none or nf4")
        if quant != "none":
            if peft != "lora" or init != "pretrained":
                raise UserError(f"quantization={quant!r} needs peft='lora' and init='pretrained' (quantized weights are frozen)")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise UserError(f"quantization={quant!r} needs bitsandbytes: pip install -e '.[gpu]' (or bitsandbytes)")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits, self._features

    def parameter_groups(self, lr: float, layer_decay: float) -> list[dict]:
        """Layer-wise lr decay: layer l of L gets lr * decay^(L + 1 - l); embeddings decay most."""
        groups: dict[float, list] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            match = re.search(r"\.(?:layer|layers)\.(\d+)\.", name)
            depth = int(match.group(1)) + 1 if match else (0 if "embed" in name else self.num_layers + 1)
            groups.setdefault(lr * layer_decay ** (self.num_layers + 1 - depth), []).append(p)
        return [{"params": ps, "lr": group_lr} for group_lr, ps in groups.items()]


def _load_unsloth(path: str, num_classes: int, quantization: str, lora_r: int, lora_alpha: int, lora_dropout: float):
    """Unsloth's fast LoRA path (NVIDIA GPUs only; imported only when asked for, since importing it
    patches transformers). Same LoRA hyper-parameters as the peft path."""
    import unsloth  # noqa: F401  (must come before transformers' model classes are used)
    from transformers import AutoModelForSequenceClassification
    from unsloth import FastModel

    model, _tokenizer = FastModel.from_pretrained(model_name=path, auto_model=AutoModelForSequenceClassification,
                                                  num_labels=num_classes, load_in_4bit=quantization == "nf4",
                                                  full_finetuning=False)
    return FastModel.get_peft_model(model, r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                    task_type="SEQ_CLS", use_gradient_checkpointing=False)


def _classifier_linear(model: nn.Module, num_classes: int) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not linears:
        raise UserError(f"{type(model).__name__}: found no classification layer with {num_classes} outputs")
    return linears[-1]


def _bnb_config(quantization: str):
    from transformers import BitsAndBytesConfig

    skip = ["classifier", "pooler", "pre_classifier", "score", "head"]  # kept in float: trainable, see ENVIRONMENT-FACTS
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                              llm_int8_skip_modules=skip)


def _wrap_peft(model, method: str, model_type: str, new_modules: set[str], quantization: str, *, lora_r: int,
               lora_alpha: int, lora_dropout: float, num_virtual_tokens: int, prompt_init_text: str | None,
               tokenizer_path: str, encoder_hidden_size: int):
    import peft

    # Newly initialised modules (the head, DeBERTa's pooler, ...) must learn: never freeze them.
    to_save = sorted({name.split(".")[0] for name in new_modules} | {"classifier"})
    to_save = [m for m in to_save if hasattr(model, m)]
    task = peft.TaskType.SEQ_CLS
    c = model.config  # DistilBERT names these dim / n_heads / n_layers, which peft cannot find alone
    shape = {"token_dim": getattr(c, "hidden_size", None) or c.dim,
             "num_attention_heads": getattr(c, "num_attention_heads", None) or c.n_heads,
             "num_layers": getattr(c, "num_hidden_layers", None) or c.n_layers}
    if method == "lora":
        if quantization != "none":
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        config = peft.LoraConfig(task_type=task, r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                 target_modules=LORA_TARGETS.get(model_type), modules_to_save=to_save)
    elif method == "prompt_tuning":
        init = {}
        if prompt_init_text:
            init = {"prompt_tuning_init": peft.PromptTuningInit.TEXT, "prompt_tuning_init_text": prompt_init_text,
                    "tokenizer_name_or_path": tokenizer_path}
        config = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=num_virtual_tokens, modules_to_save=to_save,
                                         **shape, **init)
    elif method == "p_tuning":
        config = peft.PromptEncoderConfig(task_type=task, num_virtual_tokens=num_virtual_tokens,
                                          encoder_hidden_size=encoder_hidden_size, modules_to_save=to_save, **shape)
    else:
        config = peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=num_virtual_tokens, modules_to_save=to_save,
                                         **shape)
    return peft.get_peft_model(model, config)


def _register() -> None:
    for name, checkpoint in DEFAULT_CHECKPOINTS.items():
        register_model(name, family="hf", defaults={"checkpoint": checkpoint})(HFClassifier)
    register_model("hf", family="hf")(HFClassifier)


_register()
