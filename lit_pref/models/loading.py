"""Loading policies, tokenizers and LoRA adapters from a spec: a local HF folder, a hub name, or `builtin:tiny`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from lit_pref.errors import ConfigError
from lit_pref.models.tiny import resolve_model_path

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


def load_tokenizer(spec: str):
    """Load a tokenizer; give it a pad token (EOS) if it has none, since batching needs one."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(
            f"cannot load a tokenizer from {spec!r}: {exc}. Give a local Hugging Face folder, a hub name "
            "(with network access), or 'builtin:tiny'."
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load(spec: str, auto_class, dtype: DType, **kwargs) -> nn.Module:
    path = resolve_model_path(spec)
    try:
        return auto_class.from_pretrained(path, dtype=torch_dtype(dtype), **kwargs)
    except OSError as exc:
        raise ConfigError(
            f"cannot load a model from {spec!r}: {exc}. Give a local Hugging Face folder, a hub name "
            "(with network access), or 'builtin:tiny'."
        ) from exc


def load_causal_lm(spec: str, dtype: DType = "float32") -> nn.Module:
    from transformers import AutoModelForCausalLM

    return _load(spec, AutoModelForCausalLM, dtype)


def load_sequence_scorer(spec: str, dtype: DType = "float32", pad_token_id: int | None = None) -> nn.Module:
    """A causal LM's body with a fresh (or saved) scalar head: AutoModelForSequenceClassification, 1 label."""
    from transformers import AutoModelForSequenceClassification

    return _load(spec, AutoModelForSequenceClassification, dtype, num_labels=1, pad_token_id=pad_token_id)


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


def is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)
