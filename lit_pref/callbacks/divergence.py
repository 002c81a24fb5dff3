"""Stop (or skip a bounded number of) training steps whose loss or gradient norm is not finite."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch

from lit_pref.errors import DivergenceError, check_range


def gradient_norm(module: torch.nn.Module) -> float:
    """The L2 norm of every gradient of `module` (a global norm under DDP/FSDP2: the gradients are reduced or
    sharded DTensors, so every rank gets the same value and takes the same decision)."""
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2
        norm = norm.full_tensor()
    return float(norm)


def _loss_of(outputs) -> float | None:
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else None


class DivergenceGuard(pl.Callback):
    """Stop training when a step's gradient norm or loss is not finite (NaN or inf), before the optimizer applies
    that step and before any checkpoint of it is written; the error names the step and the likely cause.
    `python -m lit_pref fit` adds this callback by default, set in YAML under `divergence:`.

    Args:
        max_bad_steps: Skip up to this many such steps in the whole run instead of stopping: the step's gradients
            are dropped, so the optimizer leaves the weights as they were (the LR schedule still advances). The
            next bad step beyond it stops the run. 0 (the default) stops at the first.
    """

    def __init__(self, max_bad_steps: int = 0):
        check_range("divergence.max_bad_steps", max_bad_steps, ge=0)
        self.max_bad_steps = max_bad_steps
        self.skipped = 0
        # the step whose gradients were already found bad (its loss is not counted again)
        self._counted_step = -1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        norm = gradient_norm(pl_module)
        if not math.isfinite(norm):
            self._bad_step(trainer, pl_module, f"the gradient norm is {norm}")
            # skipped: without gradients the optimizer leaves every weight as it is
            optimizer.zero_grad(set_to_none=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = _loss_of(outputs)
        # global_step already counts this batch's optimizer step; the gradients' check ran before it
        if loss is not None and not math.isfinite(loss) and self._counted_step != trainer.global_step - 1:
            self._bad_step(trainer, pl_module, f"the loss is {loss}", applied=True)

    def _bad_step(self, trainer, pl_module, what: str, applied: bool = False) -> None:
        done = trainer.global_step - (1 if applied else 0)  # optimizer steps before this one
        self._counted_step = done
        if self.skipped < self.max_bad_steps:
            self.skipped += 1
            print(f"lit_pref: step {done + 1}: {what}; skipping it ({self.skipped} of divergence.max_bad_steps="
                  f"{self.max_bad_steps})")  # fmt: skip
            return
        raise DivergenceError(
            f"training diverged in step {done + 1} (global_step {done}, epoch {trainer.current_epoch}): {what}. "
            f"The usual cause is a learning rate too high for this model and data ({_lr(trainer, pl_module)}): "
            "lower it, and/or clip gradients (trainer.gradient_clip_val: 1.0). Nothing of this step was saved; "
            "continue from the last checkpoint with --resume true (after lowering the rate: --resume_with_changes "
            "true), or let up to N such steps be skipped with divergence.max_bad_steps: N"
            + (f" (now {self.max_bad_steps}, all used)" if self.max_bad_steps else "")
        )

    def state_dict(self) -> dict[str, int]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


def _lr(trainer, pl_module) -> str:
    """'learning rate now X; model.init_args.lr = Y' (the schedule's current rate and the option)."""
    now = f"learning rate now {trainer.optimizers[0].param_groups[0]['lr']:g}" if trainer.optimizers else ""
    option = getattr(pl_module, "hparams", {}).get("lr")
    return "; ".join(
        filter(None, [now, f"model.init_args.lr = {option:g}" if isinstance(option, float) else ""])
    )
