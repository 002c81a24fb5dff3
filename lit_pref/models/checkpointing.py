"""Adapter-only checkpoints: a LoRA run saves what it trains, and a fingerprint of the frozen base it trains on.

The frozen base weights are rebuilt from the policy spec when a run resumes; the fingerprint (a SHA-256 over
their names, shapes, dtypes and bytes) makes a changed base an error instead of a silent mix of an adapter
with weights it was not trained against.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from lit_pref.errors import ConfigError
from lit_pref.models.loading import is_peft


def frozen_state(model: nn.Module) -> dict[str, Tensor]:
    """The entries of `model.state_dict()` that are not trainable parameters (the frozen base under LoRA)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if k not in trainable}


def fingerprint(state: dict[str, Tensor]) -> str:
    """SHA-256 over the sorted names, shapes, dtypes and raw bytes of `state` (no copy of the tensors)."""
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach()
        h.update(f"{name}|{tuple(value.shape)}|{value.dtype}".encode())
        h.update(value.contiguous().cpu().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def strip_frozen(state_dict: dict, prefix: str, frozen: dict[str, Tensor]) -> int:
    """Delete `prefix + name` for every frozen entry from a checkpoint's state dict; returns how many."""
    keys = [prefix + name for name in frozen if prefix + name in state_dict]
    for key in keys:
        del state_dict[key]
    return len(keys)


def restore_frozen(state_dict: dict, prefix: str, frozen: dict[str, Tensor]) -> None:
    """Fill the frozen entries a stripped checkpoint lacks from the freshly loaded model (kept as they are)."""
    for name, value in frozen.items():
        state_dict.setdefault(prefix + name, value.detach())


#: the checkpoint entry recording the frozen base an adapter-only checkpoint was trained on
BASE_KEY = "lit_pref_base"
_fingerprints: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def base_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's frozen base weights (computed once per model: they never change)."""
    if model not in _fingerprints:
        _fingerprints[model] = fingerprint(frozen_state(model))
    return _fingerprints[model]


def adapter_only(model: nn.Module | None, sharded: bool) -> bool:
    """LoRA without FSDP2 sharding: checkpoints hold the adapter, not the frozen base (sharded checkpoints are
    loaded strictly, shard by shard, so they keep every weight)."""
    return model is not None and is_peft(model) and not sharded


def save_adapter(checkpoint: dict[str, Any], model: nn.Module, spec: str, prefix: str = "policy.") -> None:
    """Drop `model`'s frozen base from a checkpoint; record its spec and fingerprint instead."""
    strip_frozen(checkpoint["state_dict"], prefix, frozen_state(model))
    checkpoint[BASE_KEY] = {"policy": spec, "fingerprint": base_fingerprint(model)}


def load_adapter(
    checkpoint: dict[str, Any], model: nn.Module, spec: str, adapter: bool, prefix: str = "policy."
) -> None:
    """Refill an adapter-only checkpoint's frozen base from `model` (loaded from `spec`), after checking the
    run trains an adapter too (`adapter`) and that its base has the checkpoint's fingerprint."""
    base = checkpoint.get(BASE_KEY)
    if base is None:
        return
    if not adapter:
        raise ConfigError(
            f"this checkpoint holds a LoRA adapter trained on {base['policy']!r} but not its base weights; "
            "resume it with the same model.init_args.lora settings (and without FSDP2 sharding)"
        )
    if base["fingerprint"] != base_fingerprint(model):
        raise ConfigError(
            f"this checkpoint's LoRA adapter was trained on a base model (model.init_args.policy = "
            f"{base['policy']!r}, fingerprint {base['fingerprint'][:12]}) that differs from the one loaded now "
            f"from {spec!r} (fingerprint {base_fingerprint(model)[:12]}): point "
            "model.init_args.policy at the checkpoint's base model"
        )
    restore_frozen(checkpoint["state_dict"], prefix, frozen_state(model))
