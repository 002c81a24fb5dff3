"""SPPO and Nash-MD, MPO's self-play baselines: their losses by hand, the exact tabular dynamics on a cyclic game
(SPPO's last iterate cycles while its average converges; Nash-MD converges to the regularized equilibrium), one
exact iteration of each module equal to its tabular step, and the mixture sampler."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import lit_pref
from lit_pref.losses import hard_win_rates, nash_md_loss, sppo_loss
from lit_pref.models.loading import load_causal_lm, load_tokenizer
from lit_pref.sampling import GeometricMixture, SamplingConfig, generate
from lit_pref.tasks.games import (
    cyclic3,
    duality_gap,
    geometric_mixture,
    nash_equilibrium,
    nash_md_step,
    regularized_equilibrium,
    sppo_step,
    win_rates,
)
from tests.helpers import trainer

START = np.array([0.6, 0.3, 0.1])


def test_sppo_loss_and_its_gradient_at_the_snapshot_by_hand():
    snapshot = torch.tensor([[-1.0, -2.0]])
    policy = snapshot.clone().requires_grad_(True)
    wins = torch.tensor([[0.8, 0.2]])
    loss = sppo_loss(policy, snapshot, wins, eta=2.0)
    # (0 - 2 (0.8 - 0.5))^2 and (0 - 2 (0.2 - 0.5))^2, averaged: 0.36
    assert loss.item() == pytest.approx(0.36)
    loss.sum().backward()
    # at pi_theta = pi_t: d/dl_i = (2 / K)(-eta (P_i - 1/2)) — up-weights winners, down-weights losers
    torch.testing.assert_close(policy.grad, torch.tensor([[-0.6, 0.6]]))
    weighted = sppo_loss(policy, snapshot, wins, 2.0, weights=torch.tensor([[0.25, 0.75]]))
    assert weighted.item() == pytest.approx(0.25 * 0.36 + 0.75 * 0.36)


def test_hard_win_rates_are_the_labels_of_sppo_hard():
    P = torch.tensor([[[0.5, 0.7], [0.3, 0.5]]])
    assert hard_win_rates(P).tolist() == [[1.0, 0.0]]  # K = 2: the preferred response 1, the other 0
    tie = torch.full((1, 3, 3), 0.5)
    assert hard_win_rates(tie).tolist() == [[0.5, 0.5, 0.5]]


def test_nash_md_loss_is_zero_exactly_at_the_closed_form_step():
    snapshot, reference = torch.tensor([[-1.0, -2.0, -0.5]]), torch.tensor([[-1.5, -0.3, -2.0]])
    wins, eta, tau = torch.tensor([[0.7, 0.4, 0.2]]), 0.5, 0.8
    step = (1 - eta * tau) * snapshot + eta * tau * reference + eta * wins + 3.0  # any normalizer
    assert nash_md_loss(step, snapshot, reference, wins, eta, tau).item() == pytest.approx(0.0, abs=1e-12)
    assert nash_md_loss(snapshot, snapshot, reference, wins, eta, tau).item() > 0.01


# -- exact tabular dynamics --------------------------------------------------------------------------------


def test_sppo_step_meets_its_optimality_conditions_and_is_close_to_multiplicative_weights():
    P, eta = cyclic3(), 1.0
    new = sppo_step(P, START, eta)
    u, v = np.log(new / START), eta * (win_rates(P, START) - 0.5)
    c = (v - u) / np.exp(u)  # u + c e^u = v with one c >= 0 for every response
    assert new.sum() == pytest.approx(1.0) and c.min() >= 0 and np.ptp(c) < 1e-9
    mwu = START * np.exp(eta * win_rates(P, START))
    assert 0.5 * np.abs(new - mwu / mwu.sum()).sum() < 0.01


def test_sppo_last_iterate_cycles_while_its_average_approaches_the_equilibrium():
    P, pi, total, gaps = cyclic3(), START.copy(), np.zeros(3), []
    for _ in range(2000):
        pi = sppo_step(P, pi, 1.0)
        total += pi
        gaps.append(duality_gap(P, pi))
    assert min(gaps[1000:]) > 0.05 and max(gaps[1000:]) > 0.5  # the last iterate never settles
    assert duality_gap(P, total / 2000) < 0.01  # measured 0.0061
    assert 0.5 * np.abs(total / 2000 - nash_equilibrium(P)).sum() < 0.02


@pytest.mark.parametrize("eta", [1.0, 0.2])
def test_nash_md_last_iterate_converges_to_the_regularized_equilibrium(eta):
    P, tau, pi = cyclic3(), 0.5, START.copy()
    for _ in range(3000):
        pi = nash_md_step(P, pi, START, eta, tau)
    assert 0.5 * np.abs(nash_md_step(P, pi, START, eta, tau) - pi).sum() < 1e-12  # a fixed point
    regularized = regularized_equilibrium(P, START, tau)
    assert 0.5 * np.abs(pi - regularized).sum() < 0.005 * eta  # within O(eta): 0.0043 at 1, 0.0009 at 0.2
    assert duality_gap(P, pi) > 0.13  # so it stays away from the original game's equilibrium


# -- the modules, exact mode on the game ---------------------------------------------------------------------


def game_fit(module, iterations: int, updates: int):
    data = lit_pref.PreferenceDataModule(tokenizer="builtin:game-cyclic3", train="task:game-cyclic3",
                                         format="prompt", batch_size=1, max_length=4, max_prompt_length=1)  # fmt: skip
    metrics = lit_pref.GameMetrics("cyclic3", every_n_steps=updates)
    trainer(updates * iterations, [metrics], limit_val_batches=0).fit(module, data)
    return metrics.history


def exact(cls, updates: int = 200, **kwargs):
    pl.seed_everything(0, verbose=False)
    return cls(oracle=lit_pref.MatrixOracle(game="cyclic3"), exact=True, updates_per_rollout=updates, lr=3e-2,
               sampling=SamplingConfig(max_new_tokens=1), **kwargs)  # fmt: skip


def test_one_exact_sppo_iteration_is_the_tabular_step():
    history = game_fit(exact(lit_pref.SPPO, eta=1.0), iterations=1, updates=200)
    pi0, pi1 = history[0][3], history[-1][3]
    assert 0.5 * np.abs(pi1 - sppo_step(cyclic3(), pi0, 1.0)).sum() < 1e-3
    assert 0.5 * np.abs(pi1 - pi0).sum() > 0.01  # it moved


def test_one_exact_nash_md_iteration_is_the_tabular_step():
    module = exact(lit_pref.NashMD, eta=1.0, tau=0.5)
    history = game_fit(module, iterations=1, updates=200)
    pi0, pi1 = history[0][3], history[-1][3]  # mu = the starting policy
    assert 0.5 * np.abs(pi1 - nash_md_step(cyclic3(), pi0, pi0, 1.0, 0.5)).sum() < 1e-3
    assert 0.5 * np.abs(pi1 - geometric_mixture(pi0, pi0, 0.5)).sum() > 0.01


def test_options_are_checked():
    with pytest.raises(lit_pref.ConfigError, match="tau"):
        lit_pref.NashMD(oracle=lit_pref.MatrixOracle(game="cyclic3"), eta=1.0, tau=2.0)
    with pytest.raises(lit_pref.ConfigError, match="MatrixOracle"):
        lit_pref.SPPO(
            oracle=lit_pref.BradleyTerryOracle(
                lit_pref.CallableReward("tests.algorithms.test_mpo:first_word_length")
            ),
            exact=True,
        )


# -- the mixture sampler -------------------------------------------------------------------------------------


def test_the_mixture_at_weight_one_samples_the_other_model_with_its_kv_cache_and_left_padding():
    policy = load_causal_lm("builtin:tiny", "float32", "policy").eval()
    other = load_causal_lm("builtin:tiny-sft-reviews", "float32", "other").eval()
    tok = load_tokenizer("builtin:tiny")
    prompts = [tok(f"<|user|>{q}<|end|><|assistant|>", add_special_tokens=False)["input_ids"]
               for q in ("Review the tea in one line.", "What?")]  # fmt: skip
    config = SamplingConfig(max_new_tokens=12, do_sample=False)
    mixed = generate(policy, tok, prompts, config, processors=lambda m: [GeometricMixture(other, m, 1.0)])
    assert mixed.completions == generate(other, tok, prompts, config).completions
    plain = generate(policy, tok, prompts, config).completions
    assert plain != mixed.completions  # the two models answer differently, so the check above means something
    none = generate(policy, tok, prompts, config, processors=lambda m: [GeometricMixture(other, m, 0.0)])
    assert none.completions == plain


@pytest.mark.parametrize("cls", [lit_pref.SPPO, lit_pref.NashMD])
def test_sampled_self_play_on_the_game_logs_its_metrics_and_counts_its_tokens(cls):
    pl.seed_everything(0, verbose=False)
    module = cls(oracle=lit_pref.MatrixOracle(game="cyclic3"), num_samples=4, updates_per_rollout=2, lr=3e-2,
                 sampling=SamplingConfig(max_new_tokens=1))  # fmt: skip
    data = lit_pref.PreferenceDataModule(tokenizer="builtin:game-cyclic3", train="task:game-cyclic3",
                                         format="prompt", batch_size=2, max_length=4, max_prompt_length=1)  # fmt: skip
    run = trainer(4, limit_val_batches=0)
    run.fit(module, data)
    prefix = module.metric_prefix
    assert int(module.iterations) == 2 and f"{prefix}/win_rate_spread" in run.callback_metrics
    # 2 iterations x 2 prompts x K = 4 one-token samples (Nash-MD: plus one sample of mu per prompt)
    extra = 2 * 2 if cls is lit_pref.NashMD else 0
    assert module.tokens.generated == 2 * 2 * 4 + extra
    if cls is lit_pref.NashMD:
        assert "nash_md/kl_to_reference" in run.callback_metrics
        assert "nash_md/win_rate_vs_ref" in run.callback_metrics


def test_exact_nash_md_settles_where_its_tabular_dynamics_do_near_the_regularized_equilibrium():
    module = exact(lit_pref.NashMD, updates=40, eta=1.0, tau=0.5)
    pis = [pi for *_, pi in game_fit(module, iterations=30, updates=40)]
    table = [pis[0]]
    for _ in range(30):
        table.append(nash_md_step(cyclic3(), table[-1], pis[0], 1.0, 0.5))
    assert 0.5 * np.abs(pis[-1] - table[-1]).sum() < 0.02  # measured 0.016 at most over 200 iterations
    regularized = regularized_equilibrium(cyclic3(), pis[0], 0.5)
    assert duality_gap(cyclic3(), pis[-1]) == pytest.approx(duality_gap(cyclic3(), regularized), abs=0.02)
