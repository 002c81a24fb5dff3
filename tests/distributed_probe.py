"""A callback for the distributed tests: rank 0 writes the global (all-rank mean) loss of every step and what
each rank holds of the policy's parameters to $PROBE_OUT."""

from __future__ import annotations

import json
import os

import lightning.pytorch as pl
import torch


class LossProbe(pl.Callback):
    def __init__(self):
        self.losses: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = trainer.strategy.reduce(outputs["loss"].detach().clone(), reduce_op="mean")
        self.losses.append((trainer.global_step, float(loss)))

    def on_fit_end(self, trainer, module):
        from torch.distributed.tensor import DTensor

        def shard_sizes(model) -> tuple[list[int], int]:
            """(parameters each rank holds, parameters in all)."""
            local = sum(
                p.to_local().numel() if isinstance(p, DTensor) else p.numel() for p in model.parameters()
            )
            total = sum(p.numel() for p in model.parameters())
            if trainer.world_size > 1:
                return trainer.strategy.all_gather(torch.tensor(local)).flatten().tolist(), total
            return [local], total

        counts, total = shard_sizes(module.policy)
        extra = {"trained": {name: shard_sizes(m) for name, m in module.trained_models().items()}}
        magnet = getattr(module, "magnet", None)
        if magnet is not None and getattr(magnet, "model", None) is not None:
            same = all(
                torch.equal(
                    a.to_local() if isinstance(a, DTensor) else a,
                    b.to_local() if isinstance(b, DTensor) else b,
                )
                for a, b in zip(magnet.model.parameters(), module.policy.parameters())
            )
            extra.update({"magnet_equals_policy": same, "magnet_refreshes": int(magnet.refreshes)})
        if trainer.is_global_zero:
            with open(os.environ["PROBE_OUT"], "w") as f:
                json.dump({"losses": self.losses, "local_params": counts, "total_params": total, **extra}, f)
