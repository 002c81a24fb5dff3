"""SPPO: Self-Play Preference Optimization (arXiv 2405.00675), the mirror-descent baseline MPO is compared with.

Iteration t samples K responses per prompt from pi_t, estimates each one's win rate P(y > pi_t) with the oracle,
and regresses log pi_theta(y) / pi_t(y) onto eta (P(y > pi_t) - 1/2) (losses.sppo_loss); `hard` uses 0/1
preference labels instead (with K = 2, TRL's `sppo_hard`). pi_t is the policy when the rollout is taken, so each
iteration starts from the last. The ideal update is multiplicative weights, pi_t exp(eta P(y > pi_t)): on a
cyclic game its average iterate approaches the Nash equilibrium while the last iterate keeps cycling (MPO's
magnet is what makes the last iterate converge).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lit_pref.algorithms.self_play import SelfPlay, SelfPlayRollout
from lit_pref.losses import hard_win_rates, sppo_loss
from lit_pref.oracles import PreferenceOracle


class SPPO(SelfPlay):
    """Self-Play Preference Optimization on prompt-only rows.

    Args:
        oracle: Preference oracle (lit_pref.MatrixOracle, BradleyTerryOracle, CyclicStyleOracle, CallableOracle).
        eta: Step size (the paper's eta; its 1/2 offset stands in for the step's log-normalizer).
        num_samples: K, responses sampled per prompt (>= 2; the paper uses 5).
        hard: Win rates from 0/1 labels (1[P(y_i > y_j) > 1/2]) instead of the oracle's probabilities.
        exact: Every response of a MatrixOracle's game, exact win rates P(y > pi_t) and the loss as the exact
            expectation over y ~ pi_t (games only).
        **kwargs: `updates_per_rollout`, `sampling` and the options of the common base (see SelfPlay).
    """

    object_args = ("oracle",)
    metric_prefix = "sppo"
    rollout_count_metric = "iterations"

    def __init__(
        self,
        oracle: PreferenceOracle,
        eta: float = 1.0,
        num_samples: int = 4,
        hard: bool = False,
        exact: bool = False,
        **kwargs: Any,
    ):
        super().__init__(oracle, eta, num_samples, exact, **kwargs)
        self.hard = hard

    def score(self, rollout: SelfPlayRollout) -> SelfPlayRollout:
        rollout = super().score(rollout)
        if self.hard:
            weights = self.opponent(rollout) if self.exact else None
            rollout.win_rates = hard_win_rates(rollout.preferences, weights)
        return rollout

    def rollout_loss(self, rollout: SelfPlayRollout) -> tuple[Tensor, dict[str, Tensor]]:
        policy = self.policy_logps(rollout.seqs).sum.view(rollout.num_prompts, rollout.k)
        weights = rollout.snapshot.exp() if self.exact else None  # E_{y ~ pi_t} over the whole game
        loss = sppo_loss(policy, rollout.snapshot, rollout.win_rates, self.eta, weights)
        return loss.mean(), {"logratio": (policy - rollout.snapshot).detach().mean()}
