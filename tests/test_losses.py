"""Objectives in lit_pref.losses against values computed by hand (ALGORITHMS.md, Baselines)."""

import math

import pytest
import torch

from lit_pref.losses import bradley_terry_loss, dpo_loss, sft_nll


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
