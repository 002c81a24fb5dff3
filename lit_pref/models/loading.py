"""Loading policies, tokenizers and LoRA adapters from a spec: a local HF folder, a hub name, or `builtin:tiny`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lit_pref.digest import files_digest
from lit_pref.errors import ConfigError
from lit_pref.models.artifacts import resolve_model_path
from lit_pref.models.gguf import converted_folder, gguf_file

DType = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass
class LoraSettings:
    """LoRA adapter settings (peft), given in YAML under `model.init_args.lora`.

    Args:
        r: Adapter rank.
        alpha: Scaling numerator (lora_alpha).
        dropout: Dropout on the adapter input.
        target_modules: Module names to adapt, or "all-linear".
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: "all-linear")


# LoRA settings are a hyper-parameter: checkpoints hold one, and Lightning resumes with torch.load(weights_only=True)
torch.serialization.add_safe_globals([LoraSettings])


def torch_dtype(name: DType) -> torch.dtype | str:
    return name if name == "auto" else getattr(torch, name)


# Files of which a folder needs at least one to hold a tokenizer, and the file a model folder needs.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tiktoken.model",
)
MODEL_CONFIG = "config.json"


def looks_local(spec: str) -> bool:
    """A spec that can only be a path (a hub name is 'name' or 'owner/name')."""
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1 or Path(spec).exists()


def local_folder(spec: str, option: str, what: str, needs: tuple[str, ...]) -> str:
    """Resolve `spec`; when it is a local path, check it is a folder holding one of `needs`, naming `option`.
    A GGUF file, or a folder holding one and none of `needs`, resolves to its converted folder (models/gguf.py)."""
    path = resolve_model_path(spec)
    if not looks_local(path):
        return path
    folder = Path(path).expanduser()
    if gguf := gguf_file(folder, option, needs):  # a llama.cpp checkpoint: converted once to an HF folder
        return converted_folder(gguf, option)
    if not folder.is_dir():
        raise ConfigError(
            f"{option} = {spec!r}: no such folder. Give the {what} as a local Hugging Face folder, a hub name "
            "(with network access), or 'builtin:tiny'"
        )
    if not any((folder / name).is_file() for name in needs):
        held = sorted(p.name for p in folder.iterdir())[:12]
        raise ConfigError(
            f"{option} = {spec!r}: the folder has no {what} files (needs one of {list(needs)}; it holds {held}). "
            f"Save the {what} there with save_pretrained(folder), or point {option} at a folder that has one"
        )
    return str(folder)


def load_tokenizer(spec: str, option: str = "data.tokenizer"):
    """Load a tokenizer; give it a pad token (EOS) if it has none, since batching needs one.
    `option` names the setting that gave `spec`, for errors."""
    from transformers import AutoTokenizer

    path = local_folder(spec, option, "tokenizer", TOKENIZER_FILES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{option} = {spec!r}: cannot load a tokenizer ({exc}). Give a local Hugging Face folder, a hub name "
            "(with network access), or 'builtin:tiny'."
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenizer_identity(tokenizer) -> str:
    """A hash of everything about a tokenizer that changes token ids (vocabulary, special tokens, chat template)."""
    payload = json.dumps(
        [tokenizer.get_vocab(), tokenizer.all_special_tokens, getattr(tokenizer, "chat_template", None)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def model_folder(spec: str, option: str) -> str:
    """The local folder or hub name of a model spec, checked (a local folder must hold config.json)."""
    return local_folder(spec, option, "model", (MODEL_CONFIG,))


# The files whose bytes decide a model's weights (and so its log-probs).
WEIGHT_FILES = ("config.json", "*.safetensors", "*.bin", "*.pt", "*.gguf", "*.index.json")


def model_fingerprint(spec: str, option: str, dtype: DType) -> str | None:
    """A fingerprint of a model from its files (config and weights), without loading it; None for a hub name."""
    path = model_folder(spec, option)
    if not looks_local(path):
        return None
    return f"{files_digest(path, WEIGHT_FILES)}-{dtype}"


def _load(spec: str, auto_class, dtype: DType, option: str, **kwargs) -> nn.Module:
    path = model_folder(spec, option)
    try:
        return auto_class.from_pretrained(path, dtype=torch_dtype(dtype), **kwargs)
    except OSError as exc:
        raise ConfigError(
            f"{option} = {spec!r}: cannot load a model ({exc}). Give a local Hugging Face folder, a hub name "
            "(with network access), or 'builtin:tiny'."
        ) from exc


def load_causal_lm(spec: str, dtype: DType = "float32", option: str = "model.init_args.policy") -> nn.Module:
    from transformers import AutoModelForCausalLM

    return _load(spec, AutoModelForCausalLM, dtype, option)


def load_sequence_scorer(
    spec: str,
    dtype: DType = "float32",
    pad_token_id: int | None = None,
    option: str = "model.init_args.policy",
) -> nn.Module:
    """A causal LM's body with a fresh (or saved) scalar head: AutoModelForSequenceClassification, 1 label."""
    from transformers import AutoModelForSequenceClassification

    return _load(
        spec, AutoModelForSequenceClassification, dtype, option, num_labels=1, pad_token_id=pad_token_id
    )


def prepare_trainable(
    model: nn.Module, lora: LoraSettings | None, gradient_checkpointing: bool, task_type: str = "CAUSAL_LM"
) -> nn.Module:
    """Turn on gradient checkpointing and wrap the model in a LoRA adapter when asked."""
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora is None:
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
    )
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, config)


def build_trainable(
    model: nn.Module,
    lora: LoraSettings | None,
    gradient_checkpointing: bool,
    task_type: str = "CAUSAL_LM",
    disable_dropout: bool = False,
) -> nn.Module:
    """A loaded model ready to train: dropout off in its own layers (not an adapter's) when asked, then
    `prepare_trainable`, in training mode (from_pretrained returns eval mode)."""
    if disable_dropout:
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    model = prepare_trainable(model, lora, gradient_checkpointing, task_type)
    model.train()
    return model


def is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)
