"""Objectives as pure functions of log-prob tensors.

No function here touches a model: each takes per-sequence (or per-token) log-probs that the caller computed
and returns a per-example loss tensor (callers reduce it) plus, where useful, the quantities users log.
Notation follows ALGORITHMS.md: `l` is a summed sequence log-prob, `l-bar` its length mean.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DPOLossType = Literal["sigmoid", "ipo", "hinge"]


def sft_nll(
    token_logps: Tensor, mask: Tensor, reduction: Literal["token_mean", "sequence_sum"] = "token_mean"
) -> Tensor:
    """Negative log-likelihood of the response tokens (scalar).

    token_mean: mean over every response token in the batch; sequence_sum: summed NLL per sequence, averaged
    over sequences. `token_logps` and `mask` are (B, T); masked positions must not count.
    """
    nll = torch.where(mask.bool(), -token_logps, 0.0)  # masked positions may hold anything, even inf/NaN
    if reduction == "token_mean":
        return nll.sum() / mask.sum().clamp(min=1)
    if reduction == "sequence_sum":
        return nll.sum(-1).mean()
    raise ValueError(f"unknown SFT reduction {reduction!r}")


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """DPO-family loss per pair, with the implicit rewards beta * (l_theta - l_ref) of each side.

    h = (l_theta(y_w) - l_ref(y_w)) - (l_theta(y_l) - l_ref(y_l)).
    sigmoid: -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)   (eps = label_smoothing, conservative DPO)
    ipo:     (h - 1 / (2 beta))^2, where the caller passes length-mean log-probs (the IPO authors' convention)
    hinge:   relu(1 - beta h)
    """
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def bradley_terry_loss(
    chosen_scores: Tensor, rejected_scores: Tensor, margin: Tensor | float = 0.0
) -> Tensor:
    """Reward-model loss per pair: -log sigma(r(y_w) - r(y_l) - margin)."""
    return -F.logsigmoid(chosen_scores - rejected_scores - margin)
