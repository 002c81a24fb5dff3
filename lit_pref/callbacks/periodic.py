"""One clock for every periodic callback: the optimizer step (`trainer.global_step`)."""

from __future__ import annotations

import lightning.pytorch as pl

from lit_pref.errors import check_range


class PeriodicCallback(pl.Callback):
    """Calls `on_period(trainer, module)` after every `every_n_steps`-th optimizer step.

    The clock is `trainer.global_step`, the same one `max_steps`, checkpointing and logging count: it is restored
    on resume, counts optimizer steps under gradient accumulation (once per step, not per micro-batch) and for
    online methods (one Trainer step = one optimizer step).
    """

    def __init__(self, every_n_steps: int | None):
        check_range(f"{type(self).__name__}.every_n_steps", every_n_steps, ge=1)
        self.every_n_steps = every_n_steps
        self._last_step = -1

    def on_period(self, trainer: pl.Trainer, module) -> None:
        raise NotImplementedError

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.every_n_steps or step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        self.on_period(trainer, module)
