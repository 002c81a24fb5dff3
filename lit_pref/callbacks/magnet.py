"""Periodic refresh of a refreshable companion: MPO's magnet, or a synced DPO reference (TR-DPO style)."""

from __future__ import annotations

import lightning.pytorch as pl

from lit_pref.errors import check_range


class MagnetUpdate(pl.Callback):
    """Every `every_n_iterations` training batches (MPO: iterations; DPO: steps), set the companion to the
    policy (hard refresh) or move it toward the policy by parameter EMA (`ema_decay`).

    The count is saved in checkpoints (and the companion's weights and refresh count with the module), so a
    resumed run refreshes at the same iterations as an uninterrupted one.

    Args:
        every_n_iterations: Batches between two refreshes.
        ema_decay: If set, w_magnet <- ema_decay * w_magnet + (1 - ema_decay) * w_policy instead of a hard copy.
        target: Name of the companion to refresh: magnet (MPO) or reference (DPO with a RefreshableCopy reference).
        metric: Logged count of refreshes.
    """

    def __init__(
        self,
        every_n_iterations: int = 10,
        ema_decay: float | None = None,
        target: str = "magnet",
        metric: str = "mpo/magnet_updates",
    ):
        check_range("MagnetUpdate.every_n_iterations", every_n_iterations, ge=1)
        check_range("MagnetUpdate.ema_decay", ema_decay, ge=0, lt=1)
        self.every_n_iterations = every_n_iterations
        self.ema_decay = ema_decay
        self.target = target
        self.metric = metric
        self.iterations = 0

    def on_fit_start(self, trainer, module) -> None:
        module.refreshable(
            self.target
        )  # fails before the first step, naming the option, if it cannot refresh

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.iterations += 1
        if self.iterations % self.every_n_iterations == 0:
            count = module.refresh_companion(self.target, self.ema_decay)
            module.log(self.metric, float(count), on_step=True)

    def state_dict(self) -> dict:
        return {"iterations": self.iterations}

    def load_state_dict(self, state: dict) -> None:
        self.iterations = state["iterations"]
