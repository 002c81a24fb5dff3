"""The optimizer and LR schedule every method uses: AdamW with a warm-up, then constant, linear or cosine decay.

`OptimizerSettings` groups the settings, given in YAML as the flat `model.init_args.{lr, weight_decay,
warmup_steps, lr_schedule}`; `configure_adamw` builds what Lightning's `configure_optimizers` returns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from lit_pref.errors import check_range

Schedule = Literal["constant", "linear", "cosine"]


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW and its LR schedule.

    Args:
        lr: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps from 0 to `lr`.
        lr_schedule: Shape after warm-up: constant, linear decay to 0, or cosine decay to 0.
    """

    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: Schedule = "constant"

    def __post_init__(self) -> None:
        for name in ("lr", "weight_decay", "warmup_steps"):
            check_range(f"model.init_args.{name}", getattr(self, name), ge=0)


def lr_factor(
    settings: OptimizerSettings, origin: Callable[[], int], horizon: Callable[[], int]
) -> Callable[[int], float]:
    """The LambdaLR factor at an optimizer step: warm-up, then the schedule's decay to 0 at `horizon()` steps
    after `origin()` (the step the schedule last started; asked every step). `horizon()` is asked once, when
    the decay first needs it: it may depend on the training data's size, known only once training runs."""
    warmup, schedule = settings.warmup_steps, settings.lr_schedule
    known: list[int] = []

    def factor(step: int) -> float:
        step -= origin()
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant" or step <= warmup:
            return 1.0
        if not known:
            known.append(horizon())
        progress = min((step - warmup) / max(known[0] - warmup, 1), 1.0)
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def configure_adamw(
    param_groups: list[dict[str, Any]],
    settings: OptimizerSettings,
    origin: Callable[[], int],
    horizon: Callable[[], int],
) -> dict[str, Any]:
    """AdamW over `param_groups` with the per-step LambdaLR of `lr_factor`, as `configure_optimizers` returns it."""
    optimizer = torch.optim.AdamW(param_groups, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(settings, origin, horizon))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
