"""A progress bar that counts optimizer steps in a run bounded by `max_steps` (Lightning's says "Epoch 1/-2")."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar; in a run bounded by `trainer.max_steps` (no `max_epochs`) the training bar
    runs over all the steps ("Step 40/120") instead of restarting every epoch. `python -m lit_pref` uses it in
    place of Lightning's default bar; Python users add it to `Trainer(callbacks=[...])`."""

    @property
    def by_steps(self) -> bool:
        trainer = self.trainer
        return trainer.max_steps > 0 and trainer.max_epochs in (None, -1)

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self.by_steps else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if self.by_steps:
            return f"Step (epoch {current_epoch})"
        return super()._get_train_description(current_epoch)

    def _show_steps(self, trainer) -> None:
        if self.by_steps:
            self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # resets the bar for the epoch
        self._show_steps(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._show_steps(trainer)
