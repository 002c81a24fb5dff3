"""Exact game metrics: the policy's whole distribution over a game's responses, its exploitability and its
distance to the Nash equilibrium."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import torch

from lit_pref.data.collate import sequences_batch
from lit_pref.errors import check_range
from lit_pref.models.logprobs import sequence_logps
from lit_pref.tasks.games import duality_gap, get_game


def policy_distribution(module, prompt: str, responses: list[str]) -> np.ndarray:
    """pi(y | prompt) for every response of an enumerable task (a game: sums to 1 by construction)."""
    tok = module.tokenizer
    prompt = tok(prompt, add_special_tokens=False)["input_ids"]
    responses = [tok(r, add_special_tokens=False)["input_ids"] for r in responses]
    batch = sequences_batch([prompt] * len(responses), responses, tok.pad_token_id)
    with torch.no_grad():
        logps = sequence_logps(module.policy, {k: v.to(module.device) for k, v in batch.items()}).sum
    return logps.exp().double().cpu().numpy()


class GameMetrics(pl.Callback):
    """Every `every_n_steps` optimizer steps (and at the start), log the exact
    `game/duality_gap` = 2 max_y P(y > pi) - 1 and `game/kl_to_nash` = KL(pi* || pi) of the policy, plus
    `game/prob_mass` (sum of pi, a check that it is 1). `history` keeps (step, gap, kl, pi) for scripts.

    Args:
        game: Built-in game name (e.g. cyclic3).
        every_n_steps: Steps between two logs.
    """

    def __init__(self, game: str = "cyclic3", every_n_steps: int = 1):
        check_range("GameMetrics.every_n_steps", every_n_steps, ge=1)
        self.game = get_game(game)
        self.nash = self.game.nash()
        self.every_n_steps = every_n_steps
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

    def on_fit_start(self, trainer, module) -> None:
        self.measure(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self.measure(trainer, module)
