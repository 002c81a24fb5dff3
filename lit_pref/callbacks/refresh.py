"""Periodic refresh of a refreshable companion: MPO's magnet, IRFT's stage reference, a synced DPO reference."""

from __future__ import annotations

from lit_pref.callbacks.periodic import PeriodicCallback
from lit_pref.errors import ConfigError, check_range


class CompanionRefresh(PeriodicCallback):
    """Every `every_n_steps` optimizer steps, `every_n_rollouts` rollouts of an online method (MPO iterations) or
    `every_n_epochs` epochs, set a lit_pref.RefreshableCopy companion to the policy (hard refresh) or move it
    toward the policy by parameter EMA (`ema_decay`).

    The companion's weights and refresh count are saved in checkpoints with the module, and the clock is the
    Trainer's, so a resumed run refreshes at the same steps as an uninterrupted one.

    Args:
        target: Name of the companion: reference (DPO with a RefreshableCopy reference), magnet (MPO), ...
        every_n_steps: Optimizer steps between two refreshes.
        every_n_rollouts: Rollouts between two refreshes (a rollout serves `updates_per_rollout` steps; for a
            module without rollouts, e.g. DPO, a rollout is one step).
        every_n_epochs: Epochs between two refreshes.
        ema_decay: If set, w <- ema_decay * w + (1 - ema_decay) * w_policy instead of a hard copy.
        metric: Logged count of refreshes (default: refresh/<target>).
    """

    def __init__(
        self,
        target: str = "reference",
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        ema_decay: float | None = None,
        metric: str | None = None,
        every_n_rollouts: int | None = None,
    ):
        name = type(self).__name__
        if sum(x is not None for x in (every_n_steps, every_n_rollouts, every_n_epochs)) != 1:
            raise ConfigError(
                f"{name}: set exactly one of every_n_steps, every_n_rollouts and every_n_epochs"
            )
        check_range(f"{name}.every_n_rollouts", every_n_rollouts, ge=1)
        check_range(f"{name}.every_n_epochs", every_n_epochs, ge=1)
        check_range(f"{name}.ema_decay", ema_decay, ge=0, lt=1)
        super().__init__(every_n_steps if every_n_rollouts is None else every_n_rollouts)
        self.target = target
        self.every_n_rollouts = every_n_rollouts
        self.every_n_epochs = every_n_epochs
        self.ema_decay = ema_decay
        self.metric = metric or f"refresh/{target}"

    def on_fit_start(self, trainer, module) -> None:
        module.refreshable(
            self.target
        )  # fails before the first step, naming the option, if it cannot refresh
        if self.every_n_rollouts is not None:  # a rollout serves this many optimizer steps
            self.every_n_steps = self.every_n_rollouts * module.data_needs.batch_repeats

    def on_period(self, trainer, module) -> None:
        count = module.refresh_companion(self.target, self.ema_decay)
        module.log(self.metric, float(count), on_step=True)

    def on_train_epoch_end(self, trainer, module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            count = module.refresh_companion(self.target, self.ema_decay)
            module.log(self.metric, float(count), on_epoch=True)


class MagnetUpdate(CompanionRefresh):
    """MPO's magnet refresh under its paper's name: CompanionRefresh(target: magnet, every_n_rollouts:
    every_n_iterations), counted as mpo/magnet_updates.

    Args:
        every_n_iterations: MPO iterations (rollouts) between two refreshes.
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
        super().__init__(target, ema_decay=ema_decay, metric=metric, every_n_rollouts=every_n_iterations)
        self.every_n_iterations = every_n_iterations
