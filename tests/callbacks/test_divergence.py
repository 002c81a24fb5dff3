"""Issue 29 (3): a non-finite loss or gradient stops training naming the step and the cause; nothing diverged is
saved or exported; `divergence.max_bad_steps` skips a bounded number of bad steps instead."""

from __future__ import annotations

import re

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import lit_pref
from lit_pref.callbacks.export import export_module
from lit_pref.commands.lightning import cli_instances
from lit_pref.errors import DivergenceError
from tests.conftest import REPO
from tests.helpers import data_module, trainer


class NanAt(lit_pref.DPO):
    """DPO whose loss is NaN at the given steps (as a diverging run's, but only there)."""

    def __init__(self, bad_steps=(), **kwargs):
        super().__init__(**kwargs)
        self.bad_steps = set(bad_steps)

    def compute_loss(self, batch):
        loss, metrics = super().compute_loss(batch)
        return (loss * float("nan") if self.global_step in self.bad_steps else loss), metrics


class Weights(Callback):
    """One weight of the policy after every step."""

    def __init__(self):
        self.after: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.after.append(module.policy.lm_head.weight.detach().clone())


def test_a_diverging_run_stops_naming_the_step_and_saves_nothing_of_it(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpts", every_n_train_steps=1, save_top_k=-1)
    export = lit_pref.ExportHF(dirpath=str(tmp_path / "export"))
    callbacks = [lit_pref.DivergenceGuard(), checkpoints, export]
    with pytest.raises(DivergenceError) as err:
        trainer(10, callbacks, enable_checkpointing=True, limit_val_batches=0).fit(
            lit_pref.DPO(lr=1e6), data_module(max_rows=80)
        )
    message = str(err.value)
    step = int(re.search(r"training diverged in step (\d+) ", message).group(1))
    assert re.search(r"the (gradient norm|loss) is (nan|inf)", message)
    assert "learning rate too high" in message and "model.init_args.lr = 1e+06" in message
    assert "divergence.max_bad_steps" in message
    saved = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert saved == [
        f"epoch=0-step={s}.ckpt" for s in range(1, step)
    ]  # every step before the bad one, no more
    for name in saved:
        state = torch.load(tmp_path / "ckpts" / name, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (tmp_path / "export").exists()


def test_bad_steps_up_to_the_bound_are_skipped_leaving_the_weights(capsys):
    weights = Weights()
    guard = lit_pref.DivergenceGuard(max_bad_steps=2)
    trainer(5, [guard, weights], limit_val_batches=0).fit(
        NanAt(bad_steps={1, 3}, lr=1e-3), data_module(max_rows=80)
    )
    assert guard.skipped == 2
    assert torch.equal(weights.after[1], weights.after[0]) and torch.equal(weights.after[3], weights.after[2])
    assert not torch.equal(weights.after[2], weights.after[1])  # the good steps still train
    assert all(torch.isfinite(w).all() for w in weights.after)
    out = capsys.readouterr().out
    assert "step 2: the gradient norm is nan; skipping it (1 of divergence.max_bad_steps=2)" in out
    with pytest.raises(DivergenceError, match=r"in step 4 .*\(now 1, all used\)"):
        trainer(5, [lit_pref.DivergenceGuard(max_bad_steps=1)], limit_val_batches=0).fit(
            NanAt(bad_steps={1, 3}, lr=1e-3), data_module(max_rows=80)
        )


def test_non_finite_weights_are_never_exported(tmp_path):
    module = lit_pref.DPO()
    trainer(1, limit_val_batches=0).fit(module, data_module(max_rows=16))
    with torch.no_grad():
        module.policy.model.norm.weight[0] = float("inf")
    with pytest.raises(
        DivergenceError, match=r"the policy's weight 'model.norm.weight' holds NaN or infinite"
    ):
        export_module(module, tmp_path / "export")
    assert list(tmp_path.iterdir()) == []  # not even a temporary folder


def test_the_cli_adds_the_guard_with_its_yaml_option(tmp_path):
    args = ["--config", str(REPO / "configs/dpo.yaml"), "--trainer.logger.init_args.save_dir", str(tmp_path),
            "--divergence.max_bad_steps", "3"]  # fmt: skip
    guards = [c for c in cli_instances(args)[2].callbacks if isinstance(c, lit_pref.DivergenceGuard)]
    assert [g.max_bad_steps for g in guards] == [3]
