"""MPO: Magnetic Preference Optimization (arXiv 2410.16714) — self-play magnetic mirror descent.

Not TRL's "MPO" (Mixed Preference Optimization). One rollout is one MPO iteration: sample K responses per prompt
from the current policy pi_t, ask the preference oracle for P(y_i > y_j), compute each sample's win rate P_i; the
rollout then serves `updates_per_rollout` optimizer steps on the MMD loss (losses.mpo_pairwise_loss, or
losses.mpo_reinforce_loss). The magnet pi_ref is a companion model; the MagnetUpdate callback refreshes it (that
refresh is what makes the LAST iterate reach the Nash equilibrium of the original game). Ablations by config
alone: alpha = 0 is SPPO-like mirror descent; no MagnetUpdate callback is a fixed magnet (Nash-MD-like,
converging to the regularized equilibrium).
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from lit_pref.algorithms.self_play import SelfPlay, SelfPlayRollout
from lit_pref.errors import check_range
from lit_pref.losses import mpo_pairwise_loss, mpo_reinforce_loss
from lit_pref.models.companions import CompanionModel, RefreshableCopy
from lit_pref.oracles import PreferenceOracle

LOSSES = {"pairwise": mpo_pairwise_loss, "reinforce": mpo_reinforce_loss}


class MPO(SelfPlay):
    """Magnetic Preference Optimization on prompt-only rows.

    Args:
        oracle: Preference oracle (lit_pref.MatrixOracle, BradleyTerryOracle, CyclicStyleOracle, CallableOracle).
        eta: MMD step size.
        alpha: Magnet strength (0: mirror descent without magnet, the SPPO-like ablation).
        num_samples: K, responses sampled per prompt (>= 2).
        loss: pairwise (regression onto the closed-form MMD step; default) or reinforce (KL terms in the reward).
        exact: Use every response of a MatrixOracle's game with exact win rates against the current policy
            instead of K samples (games only; the deterministic check of the method).
        magnet: Companion provider of the magnet pi_ref (default: RefreshableCopy of the starting policy).
        **kwargs: `updates_per_rollout` (optimizer steps per iteration), `sampling` (self-play settings, default
            SamplingConfig(max_new_tokens=32); rollout t samples with seed sampling.seed + 1000 t) and the
            policy, optimizer and length options of the common base (see OnlineModule, PolicyModule).
    """

    object_args = ("oracle", "magnet")
    metric_prefix = "mpo"
    rollout_count_metric = "iterations"
    companion_name = "magnet"

    def __init__(
        self,
        oracle: PreferenceOracle,
        eta: float = 0.5,
        alpha: float = 0.1,
        num_samples: int = 4,
        loss: Literal["pairwise", "reinforce"] = "pairwise",
        exact: bool = False,
        magnet: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(oracle, eta, num_samples, exact, **kwargs)
        check_range("model.init_args.alpha", alpha, ge=0)
        self.alpha, self.loss = alpha, loss
        self.magnet = magnet if magnet is not None else RefreshableCopy()

    def rollout_loss(self, rollout: SelfPlayRollout) -> tuple[Tensor, dict[str, Tensor]]:
        policy = self.policy_logps(rollout.seqs).sum.view(rollout.num_prompts, rollout.k)
        loss = LOSSES[self.loss](
            policy, rollout.snapshot, rollout.companion, rollout.win_rates, self.eta, self.alpha
        )
        return loss.mean(), {}
