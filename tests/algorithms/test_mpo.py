"""MPO: oracles, losses, exact game ground truth, the closed-form MMD step, magnet refresh, resume, language run."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import lit_pref
from lit_pref.errors import ConfigError
from lit_pref.tasks.games import (
    cyclic3,
    duality_gap,
    get_game,
    mmd_step,
    nash_equilibrium,
    regularized_equilibrium,
)
from tests.conftest import DATA
from tests.helpers import Recorder, trainer

# -- oracles ------------------------------------------------------------------------------------------------


def test_matrix_oracle_checks_symmetry_and_looks_up_responses():
    bad = [[0.5, 0.7], [0.4, 0.5]]
    with pytest.raises(ConfigError, match=r"P\[0,1\] \+ P\[1,0\] = 1.1"):
        lit_pref.MatrixOracle(matrix=bad, responses=["a", "b"])
    oracle = lit_pref.MatrixOracle(game="cyclic3")
    P = oracle(["a"], [["c", "a", "a "]])[0]
    assert P[0, 1].item() == pytest.approx(0.5 + 2 / 6)  # c beats a: a13 = -2
    assert P[1, 2].item() == 0.5 and torch.allclose(P + P.T, torch.ones(3, dtype=P.dtype))
    with pytest.raises(ConfigError, match="'d' is not one of the game's responses"):
        oracle(["a"], [["a", "d"]])


def test_bradley_terry_and_cyclic_style_oracles_by_hand():
    reward = lit_pref.CallableReward("tests.algorithms.test_mpo:first_word_length")
    P = lit_pref.BradleyTerryOracle(reward, tau=0.5)(["x"], [["aaa b", "a b c"]])[0]
    assert P[0, 1].item() == pytest.approx(1 / (1 + math.exp(-(3 - 1) / 0.5)))  # sigma((r_i - r_j) / tau)
    assert P[0, 0].item() == 0.5
    # style = words mod 3: "aaa b" -> 2, "a b c" -> 0, "a" -> 1; C[2, 0] = +1, C[0, 1] = +1, C[1, 2] = +1
    P = lit_pref.CyclicStyleOracle(reward, tau=1.0, weight=0.7)(["x"], [["aaa b", "a b c", "a"]])[0]
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert P[0, 1].item() == pytest.approx(sig((3 - 1) + 0.7))
    assert P[1, 2].item() == pytest.approx(sig((1 - 1) + 0.7))
    assert P[2, 0].item() == pytest.approx(sig((1 - 3) + 0.7))
    assert torch.allclose(P + P.transpose(0, 1), torch.ones(3, 3))


def first_word_length(prompts, responses):
    return [len(r.split()[0]) for r in responses]


def pair_prob(prompts, a, b):
    return [0.9 if len(x) > len(y) else 0.2 for x, y in zip(a, b)]


def test_callable_oracle_fills_the_lower_triangle():
    P = lit_pref.CallableOracle("tests.algorithms.test_mpo:pair_prob")(["x"], [["aa", "a", "aaa"]])[0]
    assert torch.allclose(P, torch.tensor([[0.5, 0.9, 0.2], [0.1, 0.5, 0.2], [0.8, 0.8, 0.5]]))


# -- losses -------------------------------------------------------------------------------------------------


# -- games: exact ground truth ------------------------------------------------------------------------------


def test_nash_and_duality_gap_of_the_reference_game():
    P = cyclic3()
    ne = nash_equilibrium(P)
    assert ne == pytest.approx([1 / 2, 1 / 3, 1 / 6])
    assert duality_gap(P, ne) == pytest.approx(0.0, abs=1e-12)
    assert duality_gap(P, np.array([1.0, 0, 0])) == pytest.approx(2 * (0.5 + 2 / 6) - 1)
    P9 = get_game("cyclic9").matrix
    ne9 = nash_equilibrium(P9)
    assert duality_gap(P9, ne9) == pytest.approx(0.0, abs=1e-9) and ne9.sum() == pytest.approx(1.0)


def tabular(alpha: float, refresh: int | None, steps: int) -> float:
    P, pi = cyclic3(), np.array([0.6, 0.3, 0.1])
    magnet = pi.copy()
    for t in range(1, steps + 1):
        pi = mmd_step(P, pi, magnet, 0.5, alpha)
        if refresh and t % refresh == 0:
            magnet = pi.copy()
    return duality_gap(P, pi)


def test_exact_tabular_dynamics_match_algorithms_md():
    assert tabular(0.1, 50, 1000) < 1e-4  # MPO: ~0.0000
    fixed = tabular(0.1, None, 1000)
    assert fixed == pytest.approx(0.097, abs=1e-3)  # the regularized plateau
    reg = regularized_equilibrium(cyclic3(), np.array([0.6, 0.3, 0.1]), 0.1)
    assert duality_gap(cyclic3(), reg) == pytest.approx(fixed, abs=1e-4)
    assert tabular(0.0, None, 3000) > 0.9  # alpha = 0: the last iterate runs off to a vertex


def game_run(
    alpha=0.1,
    updates=20,
    iterations=1,
    refresh=None,
    lr=3e-2,
    exact=True,
    extra=(),
    ckpt=False,
    eta=0.5,
    **kwargs,
):
    pl.seed_everything(0, verbose=False)
    data = lit_pref.PreferenceDataModule(
        tokenizer="builtin:game-cyclic3", train="task:game-cyclic3", format="prompt",
        batch_size=kwargs.pop("batch_size", 1), max_length=4, max_prompt_length=1,
    )  # fmt: skip
    module = lit_pref.MPO(
        oracle=lit_pref.MatrixOracle(game="cyclic3"), exact=exact, eta=eta, alpha=alpha, sampling=lit_pref.SamplingConfig(max_new_tokens=1),
        updates_per_rollout=updates, lr=lr, **kwargs,
    )  # fmt: skip
    metrics = lit_pref.GameMetrics("cyclic3", every_n_steps=updates)
    callbacks = [metrics, *extra] + ([lit_pref.MagnetUpdate(every_n_iterations=refresh)] if refresh else [])
    trainer(updates * iterations, callbacks, limit_val_batches=0, enable_checkpointing=ckpt).fit(module, data)
    return module, metrics.history


@pytest.mark.parametrize("alpha", [0.1, 0.0])
def test_one_exact_iteration_is_the_closed_form_mmd_step(alpha):
    module, history = game_run(alpha=alpha, updates=200)
    pi0, pi1 = history[0][3], history[-1][3]
    assert pi0.sum() == pytest.approx(1.0, abs=1e-6)  # the game policy's distribution is complete
    target = mmd_step(cyclic3(), pi0, pi0, 0.5, alpha)  # magnet = starting policy
    assert 0.5 * np.abs(pi1 - target).sum() < 1e-3
    assert 0.5 * np.abs(pi1 - pi0).sum() > 0.01  # it moved, so the check above means something


@pytest.mark.slow
def test_game_runs_separate_mpo_fixed_magnet_and_mirror_descent():
    # eta = 1, alpha = 0.5 converge in few iterations; the exact tabular dynamics from the same start give
    # MPO 0.081, fixed magnet 0.223 (= the regularized gap) and alpha = 0 0.54 after 100 iterations.
    settings = dict(eta=1.0, iterations=100, updates=10, lr=5e-2)
    _, mpo = game_run(alpha=0.5, refresh=10, **settings)
    _, fixed = game_run(alpha=0.5, **settings)
    _, md = game_run(alpha=0.0, **settings)
    plateau = duality_gap(cyclic3(), regularized_equilibrium(cyclic3(), fixed[0][3], 0.5))
    assert fixed[-1][1] == pytest.approx(plateau, abs=0.01)  # the regularized NE of the fixed magnet
    assert mpo[-1][1] < 0.6 * plateau  # the refreshed magnet goes past it, toward the true NE
    assert min(h[1] for h in md[-20:]) > plateau  # alpha = 0: the last iterate stays far from the NE
    assert mpo[-1][2] < fixed[-1][2] < md[-1][2]  # KL(NE || pi) orders the same way


# -- magnet refresh, checkpoints, resume -------------------------------------------------------------------


def test_magnet_update_refreshes_on_schedule():
    module, _ = game_run(iterations=5, updates=2, refresh=2, exact=False, num_samples=4, batch_size=2)
    assert int(module.magnet.refreshes) == 2  # after iterations 2 and 4
    module_hard, _ = game_run(iterations=4, updates=2, refresh=2, exact=False, num_samples=4, batch_size=2)
    for mine, theirs in zip(module_hard.magnet.model.parameters(), module_hard.policy.parameters()):
        assert torch.equal(mine, theirs)  # refreshed at the last iteration: magnet == policy


def test_magnet_update_needs_a_refreshable_companion():
    data = lit_pref.PreferenceDataModule(
        train=str(DATA / "reviews_pairs_train.jsonl"),
        max_rows=32,
        batch_size=16,
    )
    with pytest.raises(ConfigError, match="set model.init_args.reference: lit_pref.RefreshableCopy"):
        trainer(1, [lit_pref.MagnetUpdate(target="reference")]).fit(lit_pref.DPO(), data)


def test_mpo_resume_continues_identically(tmp_path):
    def run(ckpt_dir, ckpt_path=None):
        rec = Recorder()
        extra = (rec, ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=4, save_top_k=-1))
        module, history = game_run(
            iterations=6, updates=2, refresh=2, exact=False, num_samples=4, batch_size=2, extra=extra, ckpt=True,
        )  # fmt: skip
        return rec, module, history

    full_rec, full, _ = run(tmp_path / "a")
    # resume from the checkpoint written after iteration 2 (optimizer step 4)
    pl.seed_everything(0, verbose=False)
    data = lit_pref.PreferenceDataModule(
        tokenizer="builtin:game-cyclic3", train="task:game-cyclic3", format="prompt", batch_size=2,
        max_length=4, max_prompt_length=1,
    )  # fmt: skip
    module = lit_pref.MPO(
        oracle=lit_pref.MatrixOracle(game="cyclic3"), exact=False, num_samples=4, eta=0.5, alpha=0.1,
        sampling=lit_pref.SamplingConfig(max_new_tokens=1), updates_per_rollout=2, lr=3e-2,
    )  # fmt: skip
    rec = Recorder()
    trainer(
        12, [rec, lit_pref.MagnetUpdate(every_n_iterations=2)], limit_val_batches=0, enable_checkpointing=True
    ).fit(module, data, ckpt_path=tmp_path / "a" / "epoch=0-step=4.ckpt")
    assert int(module.iterations) == 6 and int(module.magnet.refreshes) == 3
    for mine, theirs in zip(module.policy.parameters(), full.policy.parameters()):
        assert torch.allclose(mine, theirs, atol=1e-6)
    for mine, theirs in zip(module.magnet.model.parameters(), full.magnet.model.parameters()):
        assert torch.allclose(mine, theirs, atol=1e-6)


# -- language task -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mpo_on_the_reviews_task_raises_reward_and_beats_the_start():
    pl.seed_everything(0, verbose=False)
    reward = lit_pref.TaskReward("reviews")
    evaluation = lit_pref.RewardEvaluation(
        reward=reward, num_prompts=48, every_n_steps=1000, sampling=lit_pref.SamplingConfig(max_new_tokens=16)
    )
    data = lit_pref.PreferenceDataModule(
        train="task:reviews", format="prompt", task_options={"num_rows": 400}, text_as_chat=True,
        max_length=40, max_prompt_length=24, batch_size=16,
    )  # fmt: skip
    module = lit_pref.MPO(
        policy="builtin:tiny-sft-reviews", oracle=lit_pref.BradleyTerryOracle(reward, tau=0.25), eta=1.0,
        alpha=0.1, num_samples=4, updates_per_rollout=2, sampling=lit_pref.SamplingConfig(max_new_tokens=16), lr=5e-4,
    )  # fmt: skip
    trainer(
        40,
        [evaluation, lit_pref.MagnetUpdate(every_n_iterations=10)],
        limit_val_batches=0,
        gradient_clip_val=1.0,
    ).fit(module, data)
    before, after = evaluation.history[0], evaluation.history[-1]
    assert after["eval/reward_mean"] > before["eval/reward_mean"] + 0.2
    assert after["eval/win_rate_vs_ref"] > 0.6
    assert int(module.magnet.refreshes) == 2 and int(module.iterations) == 20
