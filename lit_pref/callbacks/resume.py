"""What a resumed run needs from its checkpoints: the settings it ran with, and changed settings that really apply.

`python -m lit_pref fit` adds both callbacks itself (commands/lightning.py); they are not meant for YAML.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lit_pref.errors import ConfigError

#: the checkpoint entry holding the run's settings and its resumes with changes
RUN_KEY = "lit_pref_run"


class RunRecord(pl.Callback):
    """Store the run's settings (the CLI config, as plain values) in every checkpoint, so `--resume` can tell
    whether the command that resumes it describes the same run.

    Args:
        config: The run's settings as plain JSON values.
        resumes: The resumes with changed settings so far (kept from the checkpoint resumed from).
    """

    def __init__(self, config: dict[str, Any], resumes: list[dict[str, Any]] | None = None):
        self.config = config
        self.resumes = list(resumes or [])

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RUN_KEY] = {"config": self.config, "resumes": self.resumes}


def _scheduled_lr(scheduler, base: float, group: int, old_lr: float, old_base: float) -> float:
    """The learning rate the schedule gives now for a new base rate: exact for LambdaLR (lit_pref's schedule),
    the old rate rescaled for other schedulers."""
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        return base * scheduler.lr_lambdas[group](scheduler.last_epoch)
    return old_lr * base / old_base if old_base else base


def _optimizers_of(configured) -> list[torch.optim.Optimizer]:
    """The optimizers a `configure_optimizers` result holds (an optimizer, a dict, or lists of either)."""
    if isinstance(configured, torch.optim.Optimizer):
        return [configured]
    if isinstance(configured, dict):
        return [configured["optimizer"]]
    if isinstance(configured, (list, tuple)):
        first = configured[0] if configured else None
        if isinstance(first, (list, tuple)):  # ([optimizers], [schedulers])
            return list(first)
        return [o for item in configured for o in _optimizers_of(item)]
    raise ConfigError(f"cannot read the optimizers of configure_optimizers() = {type(configured).__name__}")


class ResumedSettings(pl.Callback):
    """After a resume with changed settings, make the optimizer and LR schedule follow the new settings: the
    checkpoint restores the old learning rates and weight decay (optimizer param groups, the scheduler's base
    rates), which would otherwise win over the config. Logs the changes (printed, and one JSON line in the run's
    `resumes.jsonl`).

    Args:
        changes: {setting: [old, new]} of the settings that differ from the checkpoint's.
        checkpoint: The checkpoint resumed from.
    """

    def __init__(self, changes: dict[str, list[Any]], checkpoint: str):
        self.changes = changes
        self.checkpoint = checkpoint

    def on_train_start(self, trainer, pl_module) -> None:
        fresh = _optimizers_of(pl_module.configure_optimizers())  # built from the new settings
        if len(fresh) != len(trainer.optimizers):
            raise ConfigError("--resume_with_changes: the changed settings give another number of optimizers")
        schedulers = {id(c.scheduler.optimizer): c.scheduler for c in trainer.lr_scheduler_configs}
        for restored, new in zip(trainer.optimizers, fresh):
            self._apply(restored, new, schedulers.get(id(restored)))
        self._log(trainer)

    @staticmethod
    def _apply(restored, new, scheduler) -> None:
        if len(restored.param_groups) != len(new.param_groups):
            raise ConfigError(
                "--resume_with_changes: the changed settings give another set of parameter groups"
            )
        for i, (group, fresh) in enumerate(zip(restored.param_groups, new.param_groups)):
            old_lr, old_base = group["lr"], group.get("initial_lr", group["lr"])
            base = fresh.get("initial_lr", fresh["lr"])
            group.update({k: v for k, v in fresh.items() if k != "params"})
            group["initial_lr"] = base
            if scheduler is None:
                group["lr"] = base
                continue
            scheduler.base_lrs[i] = base
            group["lr"] = _scheduled_lr(scheduler, base, i, old_lr, old_base)
        if scheduler is not None and hasattr(scheduler, "_last_lr"):
            scheduler._last_lr = [g["lr"] for g in restored.param_groups]  # what get_last_lr() reports

    def _log(self, trainer) -> None:
        log_dir = trainer.log_dir  # a collective (broadcast): every rank asks
        if not trainer.is_global_zero:
            return
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in self.changes.items())
        lrs = [f"{g['lr']:g}" for o in trainer.optimizers for g in o.param_groups]
        print(f"lit_pref: resumed at step {trainer.global_step} with changed settings ({listed}); learning "
              f"rate now {', '.join(lrs)}")  # fmt: skip
        if log_dir:
            record = {"step": trainer.global_step, "checkpoint": self.checkpoint, "changes": self.changes}
            with open(Path(log_dir) / "resumes.jsonl", "a") as f:
                f.write(json.dumps(record, default=str) + "\n")
