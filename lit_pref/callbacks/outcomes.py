"""Exact value and regret of a policy on the synthetic direct-outcome task (`task:outcomes`)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np

from lit_pref.callbacks.game import policy_distribution
from lit_pref.errors import check_range
from lit_pref.tasks.outcomes import START_TOKEN, OutcomesTask


class OutcomeRegret(pl.Callback):
    """At fit start, every `every_n_steps` optimizer steps and at fit end, log the policy's exact causal value
    `causal/true_value` = sum_x pi(x) g(x), `causal/regret` = max g - V(pi) and `causal/best_text_prob` on
    `task:outcomes` (the policy must be a model over its texts, e.g. `builtin:outcomes-base`). `history` keeps
    (step, regret, pi) for scripts.

    Args:
        every_n_steps: Steps between two logs.
    """

    def __init__(self, every_n_steps: int = 10):
        check_range("OutcomeRegret.every_n_steps", every_n_steps, ge=1)
        self.task = OutcomesTask()
        self.every_n_steps = every_n_steps
        self.history: list[tuple[int, float, np.ndarray]] = []

    def measure(self, trainer, module) -> None:
        pi = policy_distribution(module, START_TOKEN, self.task.texts)
        regret = self.task.regret(pi)
        self.history.append((trainer.global_step, regret, pi))
        metrics = {
            "causal/true_value": self.task.value(pi),
            "causal/regret": regret,
            "causal/best_text_prob": float(pi[int(np.argmax(self.task.effects))]),
        }
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)

    def on_fit_start(self, trainer, module) -> None:
        self.measure(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.measure(trainer, module)

    def on_fit_end(self, trainer, module) -> None:
        if not self.history or self.history[-1][0] != trainer.global_step:
            self.measure(trainer, module)
