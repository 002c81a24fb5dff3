"""Exact game metrics: the policy's whole distribution over a game's responses, its exploitability and its
distance to the Nash equilibrium."""

from __future__ import annotations

from typing import Any

import numpy as np

from lit_pref.callbacks.periodic import PeriodicCallback
from lit_pref.models.batching import score_sequences
from lit_pref.tasks.games import duality_gap, get_game


def policy_distribution(module, prompt: str, responses: list[str]) -> np.ndarray:
    """pi(y | prompt) for every response of an enumerable task (a game: sums to 1 by construction)."""
    tok = module.tokenizer
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    response_ids = [tok(r, add_special_tokens=False)["input_ids"] for r in responses]
    logps = score_sequences(module.policy, [prompt_ids] * len(responses), response_ids, tok.pad_token_id,
                            batch_size=len(responses))  # fmt: skip
    return logps.exp().double().numpy()


class GameMetrics(PeriodicCallback):
    """Every `every_n_steps` optimizer steps (and at the start), log the exact
    `game/duality_gap` = 2 max_y P(y > pi) - 1 and `game/kl_to_nash` = KL(pi* || pi) of the policy, plus
    `game/prob_mass` (sum of pi, a check that it is 1). `history` keeps (step, gap, kl, pi) for scripts.

    Args:
        game: The game: a built-in name (cyclic3, cyclic9), the path of a YAML file defining one (the same file
            as the MatrixOracle's and the model's `builtin:game-<file>`), or that definition inline.
        every_n_steps: Steps between two logs.
    """

    def __init__(self, game: str | dict[str, Any] = "cyclic3", every_n_steps: int = 1):
        super().__init__(every_n_steps)
        self.game = get_game(game)
        self.nash = self.game.nash()
        self.history: list[tuple[int, float, float, np.ndarray]] = []

    def measure(self, trainer, module) -> None:
        pi = policy_distribution(module, self.game.prompt, self.game.responses())
        gap = duality_gap(self.game.matrix, pi)
        support = self.nash > 0
        kl = float((self.nash[support] * np.log(self.nash[support] / pi[support])).sum())
        self.history.append((trainer.global_step, gap, kl, pi))
        for lg in trainer.loggers:
            lg.log_metrics(
                {"game/duality_gap": gap, "game/kl_to_nash": kl, "game/prob_mass": float(pi.sum())},
                step=trainer.global_step,
            )

    on_period = measure

    def on_fit_start(self, trainer, module) -> None:
        self.measure(trainer, module)
