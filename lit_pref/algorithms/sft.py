"""Supervised fine-tuning on demonstrations: NLL of the response tokens, prompt masked."""

from __future__ import annotations

from typing import Any, Literal

from lit_pref.algorithms.base import PolicyModule
from lit_pref.data.collate import texts_only
from lit_pref.data.needs import DataNeeds
from lit_pref.losses import sft_nll


class SFT(PolicyModule):
    """Supervised fine-tuning on (prompt, response) rows, or on the texts of outcome rows (for example those
    with the top outcomes: the outcome-filtered SFT baseline of CausalPO).

    Args:
        reduction: token_mean (mean NLL over all response tokens of the batch) or sequence_sum (summed NLL
            per response, averaged over responses).
        **kwargs: Policy, optimizer and length options of the common base (see PolicyModule).
    """

    data_needs = DataNeeds(formats=("demonstration", "outcome"))
    shares_prompts = False  # one response per prompt: nothing to share

    def __init__(self, reduction: Literal["token_mean", "sequence_sum"] = "token_mean", **kwargs: Any):
        super().__init__(**kwargs)
        self.reduction = reduction

    def compute_loss(self, batch):
        if "num_rows" in batch:  # outcome rows with base-model samples: learn the data's texts only
            batch = texts_only(batch)
        out = self.policy_logps(batch)
        loss = sft_nll(out.logps, out.mask, self.reduction)
        token_nll = -(out.logps.sum() / out.mask.sum().clamp(min=1))
        return loss, {"nll_per_token": token_nll.detach(), "logps/response": out.sum.mean().detach()}
