"""Nash-MD (arXiv 2312.00886): mirror descent against a geometric mixture, toward a fixed reference mu.

Iteration t plays pi_t against the mixture pi_t^mu ∝ pi_t^(1 - eta tau) mu^(eta tau): the K responses per prompt
are sampled from it token by token (lit_pref.GeometricMixture mixes the two models' next-token log-probs), the
oracle gives each one's win rate P(y > pi_t^mu), and the update regresses onto the closed form
log pi' = log pi_t^mu + eta P(y > pi_t^mu) + c (losses.nash_md_loss, pairwise so that c cancels). mu never moves,
so the last iterate converges (within O(eta) for a constant step) to the equilibrium of the tau-KL-regularized
game — not of the original one, which MPO reaches by refreshing its magnet.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lit_pref.algorithms.self_play import SelfPlay, SelfPlayRollout
from lit_pref.errors import ConfigError, check_range
from lit_pref.losses import nash_md_loss
from lit_pref.models.companions import CompanionModel, FrozenCopy
from lit_pref.oracles import PreferenceOracle
from lit_pref.sampling import GeometricMixture


class NashMD(SelfPlay):
    """Nash-MD on prompt-only rows.

    Args:
        oracle: Preference oracle (lit_pref.MatrixOracle, BradleyTerryOracle, CyclicStyleOracle, CallableOracle).
        eta: Step size.
        tau: KL regularization toward the reference (eta tau <= 1 is the mixture's weight on mu).
        num_samples: K, responses sampled per prompt from the mixture (>= 2).
        exact: Every response of a MatrixOracle's game, exact win rates against the exact mixture (games only).
        reference: Companion provider of mu with its own weights (default: FrozenCopy of the starting policy).
        **kwargs: `updates_per_rollout`, `sampling` and the options of the common base (see SelfPlay).
    """

    object_args = ("oracle", "reference")
    metric_prefix = "nash_md"
    rollout_count_metric = "iterations"
    companion_name = "reference"

    def __init__(
        self,
        oracle: PreferenceOracle,
        eta: float = 0.5,
        tau: float = 0.5,
        num_samples: int = 4,
        exact: bool = False,
        reference: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(oracle, eta, num_samples, exact, **kwargs)
        check_range("model.init_args.tau", tau, gt=0, le=1 / eta)
        self.tau, self.mixture_weight = tau, eta * tau
        self.reference = reference if reference is not None else FrozenCopy()

    def sample_responses(self, prompts: list[list[int]]):
        mu = self.reference.sampling_model()
        if mu is None:
            raise ConfigError("NashMD samples from a mixture with mu: model.init_args.reference needs its own "
                              "weights (lit_pref.FrozenCopy or RefreshableCopy)")  # fmt: skip
        mix = lambda mask: [GeometricMixture(mu, mask, self.mixture_weight)]  # noqa: E731
        return self.sample_group(prompts, self.num_samples, self.rollout_sampling, processors=mix)

    def opponent(self, rollout: SelfPlayRollout) -> Tensor:
        """The exact mixture pi_t^mu over the game's responses."""
        w = self.mixture_weight
        return ((1 - w) * rollout.snapshot + w * rollout.companion).softmax(-1)

    def rollout_loss(self, rollout: SelfPlayRollout) -> tuple[Tensor, dict[str, Tensor]]:
        policy = self.policy_logps(rollout.seqs).sum.view(rollout.num_prompts, rollout.k)
        loss = nash_md_loss(
            policy, rollout.snapshot, rollout.companion, rollout.win_rates, self.eta, self.tau
        )
        return loss.mean(), {}
