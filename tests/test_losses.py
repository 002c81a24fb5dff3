"""Every objective in lit_pref.losses against values computed by hand (ALGORITHMS.md): SFT, DPO/IPO/hinge,
Bradley-Terry, MPO (pairwise, REINFORCE, win rates), WSPO (token, sequence, pairwise), CausalPO (ratios, IPW/DR)."""

import math

import numpy as np
import pytest
import torch

from lit_pref.losses import (
    bradley_terry_loss,
    causal_po_loss,
    dpo_loss,
    group_win_rates,
    importance_ratios,
    mpo_pairwise_loss,
    mpo_reinforce_loss,
    sft_nll,
    wspo_loss,
    wspo_pairwise_loss,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


# -- SFT ----------------------------------------------------------------------------------------------------
# Row 0 has 3 response tokens, row 1 has 1; the masked positions of row 1 hold garbage that must not count.
LOGPS = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, 99.0, 1e6]], dtype=torch.float64)
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)


def test_sft_token_mean_averages_over_all_response_tokens():
    # (1 + 2 + 3 + 4) / 4 tokens
    assert sft_nll(LOGPS, MASK, "token_mean").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert sft_nll(LOGPS, MASK).item() == pytest.approx(2.5)  # token_mean is the default


def test_sft_sequence_sum_sums_per_sequence_then_averages_over_sequences():
    # row sums 6 and 4, mean over the 2 sequences
    assert sft_nll(LOGPS, MASK, "sequence_sum").item() == pytest.approx((6 + 4) / 2)


def test_sft_bool_mask_gives_the_same_values():
    bool_mask = MASK.bool()
    assert sft_nll(LOGPS, bool_mask, "token_mean").item() == pytest.approx(2.5)
    assert sft_nll(LOGPS, bool_mask, "sequence_sum").item() == pytest.approx(5.0)


def test_sft_changing_masked_values_changes_nothing():
    other = LOGPS.clone()
    other[1, 1:] = torch.tensor([-123.0, 7.0], dtype=torch.float64)
    for reduction in ("token_mean", "sequence_sum"):
        assert sft_nll(other, MASK, reduction).item() == sft_nll(LOGPS, MASK, reduction).item()


def test_sft_non_finite_garbage_at_masked_positions_does_not_count():
    logps = LOGPS.clone()
    logps[1, 1] = -math.inf
    logps[1, 2] = math.nan
    assert sft_nll(logps, MASK, "token_mean").item() == pytest.approx(2.5)
    assert sft_nll(logps, MASK, "sequence_sum").item() == pytest.approx(5.0)


def test_sft_all_masked_batch_is_zero_not_nan():
    logps = torch.full((2, 3), -5.0)
    assert sft_nll(logps, torch.zeros(2, 3), "token_mean").item() == 0.0


def test_sft_unknown_reduction_raises():
    with pytest.raises(ValueError, match="unknown SFT reduction 'mean'"):
        sft_nll(LOGPS, MASK, "mean")


# -- DPO ----------------------------------------------------------------------------------------------------
# policy - ref: chosen +1, rejected -1, so h = 2; with beta = 0.5, beta * h = 1.
PC, PR, RC, RR = t(-1.0), t(-3.0), t(-2.0), t(-2.0)


def test_dpo_sigmoid_matches_closed_form():
    losses, chosen_rewards, rejected_rewards = dpo_loss(PC, PR, RC, RR, beta=0.5)
    # -log sigma(1) = log(1 + e^-1)
    assert losses.item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert chosen_rewards.item() == pytest.approx(0.5 * (-1 - -2))
    assert rejected_rewards.item() == pytest.approx(0.5 * (-3 - -2))


def test_dpo_sigmoid_label_smoothing():
    eps = 0.1
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="sigmoid", label_smoothing=eps)
    # -(1 - eps) log sigma(1) - eps log sigma(-1)
    expected = (1 - eps) * math.log(1 + math.exp(-1)) + eps * math.log(1 + math.exp(1))
    assert losses.item() == pytest.approx(expected)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_dpo_sigmoid_is_log2_when_policy_equals_reference(eps):
    policy = t(-3.5, -10.0, -0.25)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy, policy.flip(0), policy, policy.flip(0), beta=0.1, label_smoothing=eps
    )
    torch.testing.assert_close(losses, torch.full((3,), math.log(2), dtype=torch.float64))
    assert torch.equal(chosen_rewards, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(rejected_rewards, torch.zeros(3, dtype=torch.float64))


def test_dpo_ipo_matches_closed_form():
    # chosen ratios [1, 0, -1], rejected ratios [-1, 0, 0]: h = [2, 0, -1]; 1 / (2 beta) = 1 for beta = 0.5
    policy_chosen = t(1.0, 0.0, -1.0)
    losses, _, _ = dpo_loss(policy_chosen, t(0.0, 0.0, 0.0), t(0.0, 0.0, 0.0), t(1.0, 0.0, 0.0), 0.5, "ipo")
    torch.testing.assert_close(losses, t((2 - 1) ** 2, (0 - 1) ** 2, (-1 - 1) ** 2))
    # beta = 0.25: target margin 1 / (2 * 0.25) = 2, reached at h = 2
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.25, loss_type="ipo")
    assert losses.item() == pytest.approx(0.0)


def test_dpo_hinge_matches_closed_form():
    h = t(2.0, 0.0, 4.0, -1.0)
    zeros = torch.zeros(4, dtype=torch.float64)
    losses, _, _ = dpo_loss(h, zeros, zeros, zeros, beta=0.5, loss_type="hinge")
    # relu(1 - 0.5 h)
    torch.testing.assert_close(losses, t(max(0.0, 1 - 1.0), 1.0, max(0.0, 1 - 2.0), 1 + 0.5))


def test_dpo_rewards_are_beta_times_log_ratio_per_side_and_detached():
    policy_chosen = t(-1.0, -5.0).requires_grad_()
    policy_rejected = t(-2.0, -4.0).requires_grad_()
    ref_chosen, ref_rejected = t(-1.5, -3.0), t(-2.5, -4.5)
    for loss_type in ("sigmoid", "ipo", "hinge"):
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.2, loss_type=loss_type
        )
        assert losses.shape == (2,)
        torch.testing.assert_close(chosen_rewards, t(0.2 * 0.5, 0.2 * -2.0))
        torch.testing.assert_close(rejected_rewards, t(0.2 * 0.5, 0.2 * 0.5))
        assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
        assert losses.requires_grad


def test_dpo_sigmoid_gradient_matches_closed_form():
    policy_chosen = PC.clone().requires_grad_()
    policy_rejected = PR.clone().requires_grad_()
    losses, _, _ = dpo_loss(policy_chosen, policy_rejected, RC, RR, beta=0.5)
    losses.sum().backward()
    # d/dl_w [-log sigma(beta h)] = -beta sigma(-beta h) = -0.5 / (1 + e), and the opposite for l_l
    assert policy_chosen.grad.item() == pytest.approx(-0.5 / (1 + math.e))
    assert policy_rejected.grad.item() == pytest.approx(0.5 / (1 + math.e))


def test_dpo_unknown_loss_type_raises():
    with pytest.raises(ValueError, match="unknown DPO loss_type 'kto'"):
        dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="kto")


# -- Bradley-Terry -------------------------------------------------------------------------------------------
def test_bradley_terry_without_margin():
    losses = bradley_terry_loss(t(2.0, 0.0, -1.0), t(1.0, 0.0, 1.0))
    # -log sigma(d) = log(1 + e^-d) for d = 1, 0, -2
    torch.testing.assert_close(losses, t(math.log(1 + math.exp(-1)), math.log(2), math.log(1 + math.exp(2))))


def test_bradley_terry_with_scalar_and_tensor_margin():
    chosen, rejected = t(2.0, 0.0), t(1.0, 0.0)
    losses = bradley_terry_loss(chosen, rejected, margin=0.5)
    torch.testing.assert_close(losses, t(math.log(1 + math.exp(-0.5)), math.log(1 + math.exp(0.5))))
    losses = bradley_terry_loss(chosen, rejected, margin=t(1.0, -1.0))
    torch.testing.assert_close(losses, t(math.log(2), math.log(1 + math.exp(-1))))


def test_group_win_rates_exclude_self():
    P = torch.tensor([[[0.5, 0.8, 0.6], [0.2, 0.5, 0.1], [0.4, 0.9, 0.5]]])
    assert group_win_rates(P)[0].tolist() == pytest.approx([0.7, 0.15, 0.65])


def test_pairwise_loss_by_hand_and_zero_at_the_closed_form():
    eta, alpha = 0.5, 0.2
    snapshot = torch.tensor([[-1.0, -2.0, -0.5]])
    magnet = torch.tensor([[-1.5, -1.0, -0.9]])
    win = torch.tensor([[0.7, 0.15, 0.65]])
    policy = torch.tensor([[-1.2, -1.9, -0.4]])
    res = [
        (1 + eta * alpha) * p - s - eta * alpha * m - eta * w
        for p, s, m, w in zip(policy[0], snapshot[0], magnet[0], win[0])
    ]
    expected = ((res[0] - res[1]) ** 2 + (res[0] - res[2]) ** 2 + (res[1] - res[2]) ** 2) / 3
    assert mpo_pairwise_loss(policy, snapshot, magnet, win, eta, alpha).item() == pytest.approx(
        expected.item()
    )
    closed = (snapshot + eta * alpha * magnet + eta * win) / (
        1 + eta * alpha
    ) + 3.7  # any per-prompt constant
    assert mpo_pairwise_loss(closed, snapshot, magnet, win, eta, alpha).item() == pytest.approx(
        0.0, abs=1e-10
    )


def test_reinforce_loss_gradient_by_hand():
    eta, alpha = 0.5, 0.1
    policy = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    snapshot, magnet, win = (
        torch.tensor([[-1.0, -2.0]]),
        torch.tensor([[-0.5, -2.5]]),
        torch.tensor([[0.8, 0.2]]),
    )
    mpo_reinforce_loss(policy, snapshot, magnet, win, eta, alpha).sum().backward()
    advantage = [
        (0.8 - 0.5) - alpha * (-1.0 + 0.5),
        (0.2 - 0.5) - alpha * (-2.0 + 2.5),
    ]  # KL to pi_t is 0 here
    assert policy.grad[0].tolist() == pytest.approx([-a / 2 for a in advantage])


WSPO_STRONG = torch.tensor([[0.5, -1.0, 9.0], [2.0, 0.0, 0.0]])
WSPO_WEAK = torch.tensor([[0.2, 0.4, -7.0], [1.0, 0.0, 0.0]])
WSPO_MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # the third token of row 0 is padding


def test_token_and_sequence_losses_by_hand():
    g = 0.5
    token = [((g * 0.5 - 0.2) ** 2 + (g * -1.0 - 0.4) ** 2) / 2, (g * 2.0 - 1.0) ** 2]
    assert wspo_loss(WSPO_STRONG, WSPO_WEAK, WSPO_MASK, g, "token").tolist() == pytest.approx(token)
    sequence = [(g * (0.5 - 1.0) - (0.2 + 0.4)) ** 2, (g * 2.0 - 1.0) ** 2]
    assert wspo_loss(WSPO_STRONG, WSPO_WEAK, WSPO_MASK, g, "sequence").tolist() == pytest.approx(sequence)
    mean = [(g * (0.5 - 1.0) / 2 - (0.2 + 0.4) / 2) ** 2, (g * 2.0 - 1.0) ** 2]
    assert wspo_loss(
        WSPO_STRONG, WSPO_WEAK, WSPO_MASK, g, "sequence", average=True
    ).tolist() == pytest.approx(mean)
    with pytest.raises(ValueError):
        wspo_loss(WSPO_STRONG, WSPO_WEAK, WSPO_MASK, g, "bogus")


def test_pairwise_loss_by_hand_and_invariance_to_a_per_prompt_constant():
    strong = torch.tensor([[0.5, -1.0, 2.0], [1.0, 3.0, 0.0]])
    weak = torch.tensor([[0.2, 0.4, -1.0], [0.0, 1.0, 2.0]])
    g = 0.5
    r = g * strong - weak
    by_hand = [
        np.mean([(float(r[b, i]) - float(r[b, j])) ** 2 for i, j in ((0, 1), (0, 2), (1, 2))])
        for b in range(2)
    ]
    assert wspo_pairwise_loss(strong, weak, g).tolist() == pytest.approx(by_hand)
    shifted = strong + torch.tensor([[7.0], [-3.0]])  # log Z(x): a constant per prompt
    assert torch.allclose(wspo_pairwise_loss(shifted, weak, g), wspo_pairwise_loss(strong, weak, g))
    assert wspo_pairwise_loss(weak / g, weak, g).abs().max() == 0  # gamma D^s = D^w: zero loss
    with pytest.raises(ValueError):
        wspo_pairwise_loss(strong[:, :1], weak[:, :1], g)


def test_importance_ratios_raw_and_self_normalized_by_hand():
    policy = torch.tensor([-1.0, -2.0, -3.0])
    behavior = torch.tensor([-2.0, -2.0, -1.0])  # log-ratios 1, 0, -2
    raw = importance_ratios(policy, behavior, self_normalize=False)
    assert torch.allclose(raw, torch.tensor([math.e, 1.0, math.exp(-2)]))
    normalized = importance_ratios(policy, behavior)
    expected = 3 * torch.tensor([math.e, 1.0, math.exp(-2)]) / (math.e + 1 + math.exp(-2))
    assert torch.allclose(normalized, expected) and normalized.mean().item() == pytest.approx(1.0)


def test_ipw_dr_and_outcome_only_losses_by_hand():
    r = torch.tensor([2.0, 0.5, 0.5])
    y = torch.tensor([1.0, -1.0, 3.0])
    g = torch.tensor([0.5, 0.0, 2.0])
    rs = torch.tensor([1.5, 0.5])
    gs = torch.tensor([1.0, -2.0])
    ipw = (2 * 1 + 0.5 * -1 + 0.5 * 3) / 3  # 1.0
    model_term = (1.5 * 1 + 0.5 * -2) / 2  # 0.25
    residual = (2 * 0.5 + 0.5 * -1 + 0.5 * 1) / 3  # 1/3
    kw = dict(ratios=r, outcomes=y, predictions=g, sample_ratios=rs, sample_predictions=gs)
    assert causal_po_loss("ipw", **kw).item() == pytest.approx(-ipw)
    assert causal_po_loss("outcome_only", **kw).item() == pytest.approx(-model_term)
    assert causal_po_loss("dr", **kw).item() == pytest.approx(-(residual + model_term))
    assert causal_po_loss("ipw", **kw, higher_is_better=False).item() == pytest.approx(ipw)
    # PPO-style clip at 0.2, min(r A, clip(r) A) per row: (2, A=1) -> 1.2; (0.5, A=-1) -> min(-0.5, -0.8) = -0.8;
    # (0.5, A=3) -> min(1.5, 2.4) = 1.5.
    clipped = (1.2 - 0.8 + 1.5) / 3
    assert causal_po_loss("ipw", **kw, clip=0.2).item() == pytest.approx(-clipped)
    with pytest.raises(ValueError, match="samples"):
        causal_po_loss("dr", ratios=r, outcomes=y, predictions=g)
