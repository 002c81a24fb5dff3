"""FSDP2 sharding of the policy and the frozen companion models (applied in `configure_model`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from lit_pref.models.companions import CompanionModel


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a HF model (its `_no_split_modules` classes), through a LoRA wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(inner, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def shard(
    model: nn.Module, mesh, frozen: bool, param_dtype: str | None = None, offload_frozen: bool = False
) -> None:
    """fully_shard every decoder block, then the root, on the data-parallel mesh.

    Frozen models reshard after forward (they never run backward) and may live on the CPU between uses.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kwargs = {"mesh": mesh, "reshard_after_forward": True}
    if param_dtype:
        kwargs["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=getattr(torch, param_dtype), reduce_dtype=torch.float32
        )
    if frozen and offload_frozen:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for block in decoder_blocks(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)


def shard_models(
    trained: Iterable[nn.Module],
    companions: Iterable[CompanionModel],
    mesh,
    param_dtype: str | None = None,
    offload_frozen: bool = False,
) -> None:
    """FSDP2 over `mesh`: every trained model, and every companion's frozen models (which then keep their
    weights in checkpoints: sharded checkpoints are loaded strictly, so they hold every shard)."""
    for model in trained:
        shard(model, mesh, frozen=False, param_dtype=param_dtype)
    for provider in companions:
        provider.keep_in_checkpoints()
        for model in provider.frozen_models():
            shard(model, mesh, frozen=True, param_dtype=param_dtype, offload_frozen=offload_frozen)
