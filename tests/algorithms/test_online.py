"""The shared online loop: one rollout serves `updates_per_rollout` Trainer steps; Trainer clipping, callbacks'
clocks, validation, token accounting and mid-rollout resume all work on it (MPO on a sampled game)."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import lit_pref
from lit_pref.callbacks.periodic import PeriodicCallback
from tests.helpers import trainer


def game_data(**kwargs):
    return lit_pref.PreferenceDataModule(
        tokenizer="builtin:game-cyclic3", train="task:game-cyclic3", format="prompt", batch_size=2,
        max_length=4, max_prompt_length=1, **kwargs,
    )  # fmt: skip


def game_mpo(updates: int = 3) -> lit_pref.MPO:
    return lit_pref.MPO(
        oracle=lit_pref.MatrixOracle(game="cyclic3"), num_samples=4, eta=0.5, alpha=0.1, lr=3e-2,
        updates_per_rollout=updates, sampling=lit_pref.SamplingConfig(max_new_tokens=1),
    )  # fmt: skip


class StepLog(Callback):
    """(global_step, rollouts, id of the rollout in use, magnet refreshes) after every training step."""

    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rows.append(
            (trainer.global_step, int(module.rollouts), id(module._rollout), int(module.magnet.refreshes))
        )


class Every(PeriodicCallback):
    def __init__(self, n):
        super().__init__(n)
        self.fired = []

    def on_period(self, trainer, module):
        self.fired.append(trainer.global_step)


class GradNorms(Callback):
    """The gradient norm each optimizer step actually applies (after the Trainer's clipping)."""

    def __init__(self):
        self.norms = []

    def on_train_start(self, trainer, module):
        def record(optimizer, args, kwargs):
            grads = [
                p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

        trainer.optimizers[0].register_step_post_hook(record)  # grads are still those applied


def fit(module, steps, callbacks=(), ckpt_path=None, **kwargs):
    pl.seed_everything(0, verbose=False)
    trainer(steps, callbacks, limit_val_batches=0, **kwargs).fit(module, game_data(), ckpt_path=ckpt_path)
    return module


def test_one_rollout_serves_k_steps_and_callbacks_fire_on_their_steps():
    log, every3, every2 = StepLog(), Every(3), Every(2)
    module = fit(game_mpo(3), 9, [log, every3, every2, lit_pref.MagnetUpdate(every_n_iterations=1)])
    assert [r[0] for r in log.rows] == list(range(1, 10))  # one Trainer step = one optimizer step
    assert [r[1] for r in log.rows] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    ids = [r[2] for r in log.rows]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4] == ids[5] != ids[6]  # reused, then replaced
    assert every3.fired == [3, 6, 9] and every2.fired == [2, 4, 6, 8]
    assert int(module.magnet.refreshes) == 3  # MagnetUpdate counts iterations: after steps 3, 6 and 9
    assert [r[3] for r in log.rows][:4] == [
        0,
        0,
        0,
        1,
    ]  # refreshed after the rollout's last update (StepLog runs first)


def test_token_counter_adds_generation_scoring_and_updates():
    module = fit(game_mpo(3), 9)
    # per rollout: 2 prompts x K=4 samples + 1 magnet sample per prompt, 1-token prompts and responses
    assert module.tokens.prompt == 3 * (8 + 2) and module.tokens.generated == 3 * (8 + 2)
    # scoring: snapshot and magnet forward over 8 sequences of 2 tokens; each update one more forward
    assert module.tokens.forward == 3 * 2 * 16 + 9 * 16


def test_trainer_gradient_clipping_applies_to_online_updates():
    clipped, free = GradNorms(), GradNorms()
    fit(game_mpo(3), 6, [clipped], gradient_clip_val=1e-3)
    fit(game_mpo(3), 6, [free])
    assert len(clipped.norms) == 6 and max(clipped.norms) <= 1e-3 * (1 + 1e-4)
    assert max(free.norms) > 1e-3  # so the bound above comes from the clipping


def test_resume_inside_a_rollout_continues_on_the_same_samples(tmp_path):
    full = fit(game_mpo(3), 9, [ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1)],
               enable_checkpointing=True)  # fmt: skip
    # step 4 is the first update of rollout 2: the checkpoint holds that rollout and its position
    resumed = fit(game_mpo(3), 9, ckpt_path=tmp_path / "epoch=0-step=4.ckpt", enable_checkpointing=True)
    assert int(resumed.rollouts) == 3
    for mine, theirs in zip(resumed.policy.parameters(), full.policy.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0)


def test_validation_is_a_rollout_without_an_update():
    module = fit(game_mpo(2), 2)
    before = [p.detach().clone() for p in module.policy.parameters()]
    data = game_data(val="task:game-cyclic3")
    metrics = trainer(1, limit_val_batches=2).validate(module, data, verbose=False)[0]
    assert {"val/loss", "val/kl_to_magnet", "val/win_rate_spread"} <= set(metrics)
    assert metrics["val/loss"] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, module.policy.parameters()))


def test_updates_per_rollout_must_be_positive():
    with pytest.raises(lit_pref.ConfigError, match="updates_per_rollout must be >= 1"):
        game_mpo(0)
