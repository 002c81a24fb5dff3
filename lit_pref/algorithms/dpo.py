"""Direct Preference Optimization (and the IPO / hinge variants) against a frozen reference provider."""

from __future__ import annotations

from typing import Any

from lit_pref.algorithms.base import PolicyModule, default_reference, reward_metrics
from lit_pref.errors import check_range
from lit_pref.losses import DPOLossType, dpo_loss, sft_nll
from lit_pref.models.companions import CompanionModel


class DPO(PolicyModule):
    """DPO on (prompt, chosen, rejected) rows; one forward runs chosen and rejected together.

    Args:
        beta: Strength of the implicit KL penalty (inverse temperature of the implicit reward).
        loss_type: sigmoid (DPO), ipo (squared, on length-mean log-ratios, as the IPO authors define it), or
            hinge (SLiC-style).
        label_smoothing: Probability that a label is flipped (conservative DPO); sigmoid loss only.
        sft_weight: Add this times the NLL of the chosen responses (token mean) to the loss: DPO's push-down of the
            rejected side can drain the chosen side too (likelihood displacement), and on small models the freed
            mass goes to degenerate answers such as a lone "."; the NLL term keeps the chosen answers likely (RPO,
            TRL's `rpo_alpha`). 0 is plain DPO.
        reference: Companion provider of the reference log-probs: lit_pref.FrozenCopy,
            lit_pref.DisabledAdapter, lit_pref.Precomputed or lit_pref.RefreshableCopy. Default: the disabled
            adapter for LoRA policies, else a frozen copy of the starting policy.
        **kwargs: Policy, optimizer and length options of the common base (see PolicyModule).
    """

    object_args = ("reference",)

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: DPOLossType = "sigmoid",
        label_smoothing: float = 0.0,
        sft_weight: float = 0.0,
        reference: CompanionModel | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        check_range("model.init_args.beta", beta, gt=0)
        check_range("model.init_args.label_smoothing", label_smoothing, ge=0, lt=0.5)
        check_range("model.init_args.sft_weight", sft_weight, ge=0)
        self.beta = beta
        self.loss_type = loss_type
        self.label_smoothing = label_smoothing
        self.sft_weight = sft_weight
        self.reference = default_reference(self, reference)

    def compute_loss(self, batch):
        n = batch["num_pairs"]
        average = self.loss_type == "ipo"
        policy_chosen, policy_rejected = self.policy_logps(batch).split(n)
        ref_chosen, ref_rejected = self.reference.token_logps(batch).split(n)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            policy_chosen.sequence(average),
            policy_rejected.sequence(average),
            ref_chosen.sequence(average),
            ref_rejected.sequence(average),
            beta=self.beta,
            loss_type=self.loss_type,
            label_smoothing=self.label_smoothing,
        )
        metrics = {
            **reward_metrics(chosen_rewards, rejected_rewards),
            "logps/chosen": policy_chosen.sum.detach().mean(),
            "logps/rejected": policy_rejected.sum.detach().mean(),
        }
        loss = losses.mean()
        if self.sft_weight:
            nll = sft_nll(policy_chosen.logps, policy_chosen.mask)
            metrics["nll/chosen"] = nll.detach()
            loss = loss + self.sft_weight * nll
        return loss, metrics
