"""Adapter-only checkpoints: a LoRA run saves what it trains, and a fingerprint of the frozen base it trains on.

The frozen base weights are rebuilt from the policy spec when a run resumes; the fingerprint (a SHA-256 over
their names, shapes, dtypes and bytes) makes a changed base an error instead of a silent mix of an adapter
with weights it was not trained against.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn


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
