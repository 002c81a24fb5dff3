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


IRFTLink = Literal["sigmoid", "hinge", "linear"]


def irft_loss(
    policy_demo: Tensor,
    policy_sample: Tensor,
    ref_demo: Tensor,
    ref_sample: Tensor,
    beta: float,
    link: IRFTLink = "sigmoid",
) -> tuple[Tensor, Tensor, Tensor]:
    """IRFT / SPIN loss per (demonstration, own sample) pair, with the implicit rewards of each side.

    delta = (l_theta(y*) - l_s(y*)) - (l_theta(y~) - l_s(y~)), with l_s the frozen stage reference.
    sigmoid: -log sigma(beta delta) (SPIN's and IRFT's default); hinge: relu(1 - beta delta);
    linear: -beta delta, the stochastic gradient direction of the IRL objective itself (no saturation).
    """
    if link == "linear":
        demo_ratio, sample_ratio = policy_demo - ref_demo, policy_sample - ref_sample
        losses = -beta * (demo_ratio - sample_ratio)
        return losses, beta * demo_ratio.detach(), beta * sample_ratio.detach()
    if link not in ("sigmoid", "hinge"):
        raise ValueError(f"unknown IRFT link {link!r}")
    return dpo_loss(policy_demo, policy_sample, ref_demo, ref_sample, beta, loss_type=link)


def bradley_terry_loss(
    chosen_scores: Tensor, rejected_scores: Tensor, margin: Tensor | float = 0.0
) -> Tensor:
    """Reward-model loss per pair: -log sigma(r(y_w) - r(y_l) - margin)."""
    return -F.logsigmoid(chosen_scores - rejected_scores - margin)


def leave_one_out_advantages(rewards: Tensor) -> Tensor:
    """A_i = r_i - (1 / (K - 1)) sum_{j != i} r_j over the K samples of each prompt; `rewards` is (B, K >= 2).

    The baseline of sample i never uses r_i, so E[A_i grad log pi(y_i)] is the unbiased policy gradient
    (RLOO); equal to K / (K - 1) (r_i - mean_j r_j)."""
    k = rewards.shape[-1]
    if rewards.ndim != 2 or k < 2:
        raise ValueError(f"leave-one-out advantages need (B, K >= 2) rewards, got {tuple(rewards.shape)}")
    return (rewards - rewards.mean(-1, keepdim=True)) * (k / (k - 1))


def kl_regularized_reinforce_loss(
    policy: Tensor, reference: Tensor, rewards: Tensor, beta: float
) -> tuple[Tensor, Tensor, Tensor]:
    """REINFORCE on E_{y~pi_theta}[r(y)] - beta KL(pi_theta || pi_ref), one loss per prompt.

    `policy` (with gradients) and `reference` are (B, K) summed log-probs of K samples y_i ~ pi_theta per prompt;
    `rewards` (B, K) their rewards. The KL enters the reward, per sample: r'_i = r_i - beta (l_theta_i - l_ref_i)
    (detached), so that the score-function gradient -mean_i A_i grad l_theta_i with leave-one-out advantages
    A_i of r' estimates the gradient of the regularized objective without bias. (A KL term minimized directly on
    the samples would not: its expected gradient under pi_theta is zero for the k1 estimator and that of
    KL(pi_ref || pi_theta) for k3.) Returns (losses, per-sample KL estimates l_theta - l_ref, advantages).
    """
    kl = (policy - reference).detach()
    advantages = leave_one_out_advantages(rewards.detach() - beta * kl)
    return -(advantages * policy).mean(-1), kl, advantages


def group_win_rates(preferences: Tensor) -> Tensor:
    """P_i = (1 / (K - 1)) sum_{j != i} P(y_i > y_j): each sample's win rate against the others in its group.

    `preferences` is (B, K, K) with P[b, i, j] = P(y_i > y_j); returns (B, K).
    """
    k = preferences.shape[-1]
    off_diagonal = preferences.sum(-1) - preferences.diagonal(dim1=-2, dim2=-1)
    return off_diagonal / (k - 1)


def hard_win_rates(preferences: Tensor, weights: Tensor | None = None) -> Tensor:
    """Win rates from hard labels: P_i = mean_{j != i} 1[P(y_i > y_j) > 1/2] (ties count 1/2), or with
    `weights` (B, K) the weighted sum over every j (an exact opponent distribution). (B, K, K) -> (B, K).
    With K = 2 the labels of SPPO's hard variant (TRL's `sppo_hard`): 1 for the preferred response, 0 for the other."""
    labels = (preferences > 0.5).to(preferences.dtype) + 0.5 * (preferences == 0.5).to(preferences.dtype)
    if weights is not None:
        return (labels @ weights[..., None]).squeeze(-1)
    return group_win_rates(labels)


def _pairwise_mean_square(residual: Tensor) -> Tensor:
    """Mean over the pairs i < j of a group of (r_i - r_j)^2: (B, K) -> (B,). A per-prompt constant in the
    residual (a normalizer) cancels."""
    diffs = residual[:, :, None] - residual[:, None, :]
    k = residual.shape[1]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=residual.device), diagonal=1)
    return (diffs[:, upper] ** 2).mean(-1)


def mpo_pairwise_loss(
    policy: Tensor, snapshot: Tensor, magnet: Tensor, win_rates: Tensor, eta: float, alpha: float
) -> Tensor:
    """MPO's magnetic-mirror-descent step as a pairwise regression, one loss per prompt.

    All tensors are (B, K) summed sequence log-probs (policy = l_theta, snapshot = l_t of the policy that sampled,
    magnet = l_ref) and win rates P_i. For every pair i < j of a group:
        d = (1 + eta alpha)(l_theta_i - l_theta_j) - (l_t_i - l_t_j) - eta alpha (l_ref_i - l_ref_j) - eta (P_i - P_j)
    and the loss is the mean of d^2 over pairs. Its minimizer is the closed-form MMD step
    (1 + eta alpha) log pi' = log pi_t + eta alpha log pi_ref + eta P(y > pi_t) + c(x), whose normalizer cancels.
    alpha = 0 gives the mirror-descent (SPPO-like) step.
    """
    target = snapshot + eta * alpha * magnet + eta * win_rates
    return _pairwise_mean_square((1 + eta * alpha) * policy - target)


def sppo_loss(
    policy: Tensor, snapshot: Tensor, win_rates: Tensor, eta: float, weights: Tensor | None = None
) -> Tensor:
    """SPPO's loss (arXiv 2405.00675, eq. 3.4), one per prompt: the mean over the K samples y_i ~ pi_t of
        (l_theta_i - l_t_i - eta (P_i - 1/2))^2,
    regressing log pi_theta / pi_t onto eta (P(y > pi_t) - 1/2); eta/2 stands in for the log-normalizer of the
    multiplicative-weights step pi_t exp(eta P). `weights` (B, K) replace the sample mean by a weighted sum (an
    exact expectation over pi_t on a game). All tensors (B, K)."""
    squares = (policy - snapshot - eta * (win_rates - 0.5)) ** 2
    return squares.mean(-1) if weights is None else (weights * squares).sum(-1)


def nash_md_loss(
    policy: Tensor, snapshot: Tensor, reference: Tensor, win_rates: Tensor, eta: float, tau: float
) -> Tensor:
    """Nash-MD's step (arXiv 2312.00886) as a pairwise regression, one loss per prompt. With the geometric
    mixture log pi_t^mu = (1 - eta tau) l_t + eta tau l_mu (+ c) and win rates P_i = P(y_i > pi_t^mu), the step
    pi' = argmax_pi eta P(pi > pi_t^mu) - KL(pi || pi_t^mu) is log pi' = log pi_t^mu + eta P + c; for every pair
        d = (l_theta_i - l_theta_j) - (log pi_t^mu_i - log pi_t^mu_j) - eta (P_i - P_j),
    and the loss is the mean of d^2 over pairs (normalizers cancel). All tensors (B, K): policy = l_theta,
    snapshot = l_t, reference = l_mu (the fixed mu)."""
    mixture = (1 - eta * tau) * snapshot + eta * tau * reference
    return _pairwise_mean_square(policy - mixture - eta * win_rates)


def mpo_reinforce_loss(
    policy: Tensor, snapshot: Tensor, magnet: Tensor, win_rates: Tensor, eta: float, alpha: float
) -> Tensor:
    """MPO's step as REINFORCE with the KL terms in the reward (the MPO-RT form), one loss per prompt.

    On samples y_i from the snapshot pi_t, the score-function gradient of
    E[P(y > pi_t)] - alpha KL(pi_theta || pi_ref) - (1 / eta) KL(pi_theta || pi_t) uses the per-sample reward
        A_i = (P_i - 1/2) - alpha (l_theta_i - l_ref_i) - (1 / eta)(l_theta_i - l_t_i),   (detached)
    and loss = -mean_i A_i l_theta_i. (The 1/2 baseline is exact in round-robin self-play, where the P_i average 1/2.)
    """
    advantage = (win_rates - 0.5) - alpha * (policy - magnet) - (policy - snapshot) / eta
    return -(advantage.detach() * policy).mean(-1)


def wspo_loss(
    strong_delta: Tensor,
    weak_delta: Tensor,
    mask: Tensor,
    gamma: float,
    level: Literal["token", "sequence"] = "token",
    average: bool = False,
) -> Tensor:
    """WSPO: make the strong model's log-ratio, scaled by gamma, match the weak model's alignment shift.

    `strong_delta` = log pi_theta - log pi_ref^s and `weak_delta` = log pi_r^w - log pi_ref^w, per token, (B, T),
    with `mask` marking response tokens. Returns one loss per example:
    token:    (1 / n) sum_t m_t (gamma strong_t - weak_t)^2           (the official implementation)
    sequence: (gamma sum_t strong_t - sum_t weak_t)^2
              with average=True the sums become length means.
    The sequence level regresses the UNNORMALIZED log pi_theta(y) onto log pi_ref^s(y) + (1/gamma) sum_t weak_t,
    i.e. onto log(Z(x) pi*(y)) with pi* ∝ pi_ref^s (pi_r^w / pi_ref^w)^(1/gamma) and
    Z(x) = sum_y pi_ref^s(y) (pi_r^w(y) / pi_ref^w(y))^(1/gamma). A normalized policy reaches pi* only when
    Z(x) = 1; otherwise it settles at the log-space least-squares projection of Z pi* onto the simplex (see
    WSPO's docstring). `wspo_pairwise_loss` cancels Z(x) and reaches pi* exactly.
    """
    count = mask.sum(-1).clamp(min=1)
    if level == "token":
        residual = torch.where(mask.bool(), gamma * strong_delta - weak_delta, 0.0)
        return (residual**2).sum(-1) / count
    if level == "sequence":
        strong = torch.where(mask.bool(), strong_delta, 0.0).sum(-1)
        weak = torch.where(mask.bool(), weak_delta, 0.0).sum(-1)
        if average:
            strong, weak = strong / count, weak / count
        return (gamma * strong - weak) ** 2
    raise ValueError(f"unknown WSPO level {level!r}")


def wspo_pairwise_loss(strong: Tensor, weak: Tensor, gamma: float) -> Tensor:
    """WSPO between responses of the same prompt, one loss per prompt.

    `strong` and `weak` are (B, K) summed log-ratios D^s = l_theta - l_ref^s and D^w = l_r^w - l_ref^w of K >= 2
    responses per prompt. For every pair i < j:
        d_ij = gamma (D^s_i - D^s_j) - (D^w_i - D^w_j)
    and the loss is the mean of d_ij^2 over pairs. The per-prompt constant log Z(x) cancels in the differences,
    so with the pairs of a prompt connecting its responses the minimizer over normalized policies is exactly
    pi* ∝ pi_ref^s (pi_r^w / pi_ref^w)^(1/gamma).
    """
    if strong.ndim != 2 or strong.shape[1] < 2 or strong.shape != weak.shape:
        raise ValueError(
            f"wspo_pairwise_loss needs (B, K >= 2) tensors, got {tuple(strong.shape)}, {tuple(weak.shape)}"
        )
    residual = gamma * strong - weak
    diffs = residual[:, :, None] - residual[:, None, :]
    k = strong.shape[1]
    upper = torch.triu(torch.ones(k, k, dtype=torch.bool, device=strong.device), diagonal=1)
    return (diffs[:, upper] ** 2).mean(-1)


CausalEstimator = Literal["ipw", "dr", "outcome_only"]


def importance_ratios(policy_logps: Tensor, behavior_logps: Tensor, self_normalize: bool = True) -> Tensor:
    """Estimates of P^f(x) / P^R(x) for a batch of texts from summed log-probs, shape (B,).

    Raw: exp(l_theta - l_R). Self-normalized (the official CausalPO code's choice, since sequence-probability
    ratios explode): B * softmax over the batch of (l_theta - l_R), so the ratios average 1 in the batch and
    mean_i(r_i Y_i) is the self-normalized estimate sum_i w_i Y_i.
    """
    log_ratio = policy_logps - behavior_logps
    if self_normalize:
        return log_ratio.numel() * torch.softmax(log_ratio, dim=0)
    return log_ratio.exp()


def weighted_mean(ratios: Tensor, targets: Tensor, clip: float | None = None) -> Tensor:
    """mean_i r_i t_i; with `clip` = eps the PPO-style pessimistic mean_i min(r_i t_i, clip(r_i, 1-eps, 1+eps) t_i)."""
    if clip is None:
        return (ratios * targets).mean()
    clipped = ratios.clamp(1 - clip, 1 + clip)
    return torch.minimum(ratios * targets, clipped * targets).mean()


def causal_po_loss(
    estimator: CausalEstimator,
    ratios: Tensor,
    outcomes: Tensor,
    predictions: Tensor | None = None,
    sample_ratios: Tensor | None = None,
    sample_predictions: Tensor | None = None,
    higher_is_better: bool = True,
    clip: float | None = None,
) -> Tensor:
    """Negative causal value estimate of the policy (minimized), from importance ratios (see importance_ratios).

    ipw:          V = mean_i r_i Y_i
    dr:           V = mean_i r_i (Y_i - g_hat(X_i)) + mean_j r~_j g_hat(X~_j)   (X~_j sampled from f0, r~ vs f0)
    outcome_only: V = mean_j r~_j g_hat(X~_j)
    With higher_is_better=False the outcome is minimized instead (the sign is applied before clipping, so the
    clip stays pessimistic about the objective).
    """
    sign = 1.0 if higher_is_better else -1.0
    if estimator == "ipw":
        return -weighted_mean(ratios, sign * outcomes, clip)
    if sample_ratios is None or sample_predictions is None:
        raise ValueError(f"the {estimator} estimator needs the base-model samples' ratios and predictions")
    model_term = weighted_mean(sample_ratios, sign * sample_predictions, clip)
    if estimator == "outcome_only":
        return -model_term
    if estimator == "dr":
        if predictions is None:
            raise ValueError("the dr estimator needs the outcome model's predictions for the data's texts")
        return -(weighted_mean(ratios, sign * (outcomes - predictions), clip) + model_term)
    raise ValueError(f"unknown CausalPO estimator {estimator!r}")
