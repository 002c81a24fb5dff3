"""LoRA checkpoints hold the adapter, optimizer state and counters only, resume bit-exact, and refuse a
changed base model."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoModelForCausalLM

import lit_pref
from lit_pref.errors import ConfigError
from tests.helpers import Recorder, data_module, trainer


def run(ckpt_dir: Path, steps: int, ckpt_path=None, policy: str | None = None):
    pl.seed_everything(0)
    module = lit_pref.DPO(
        policy=policy,
        lora=lit_pref.LoraSettings(r=4),
        lr=5e-3,
        warmup_steps=3,
        lr_schedule="linear",
        prefix_sharing=False,  # bit-exact resume is a property of the plain layout (see test_checkpoint.py)
    )
    rec = Recorder()
    checkpoints = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=4, save_top_k=-1)
    trainer(steps, [rec, checkpoints], enable_checkpointing=True, limit_val_batches=0).fit(
        module, data_module(max_rows=80), ckpt_path=ckpt_path
    )
    return rec.steps, module


def test_lora_checkpoint_holds_no_base_weights_and_resumes_bit_exact(tmp_path):
    full, module = run(tmp_path / "a", 10)  # 5 batches per epoch: the resume crosses an epoch boundary
    ckpt = torch.load(tmp_path / "a" / "epoch=0-step=4.ckpt", weights_only=False)
    trainable = {"policy." + n for n, p in module.policy.named_parameters() if p.requires_grad}
    assert set(ckpt["state_dict"]) == trainable  # adapter weights only: no base_layer / embedding / norm
    assert all("lora_" in key for key in ckpt["state_dict"])
    assert len(ckpt["optimizer_states"][0]["state"]) == len(trainable)
    assert ckpt["global_step"] == 4 and len(ckpt["lit_pref_base"]["fingerprint"]) == 64

    resumed, again = run(tmp_path / "b", 10, ckpt_path=tmp_path / "a" / "epoch=0-step=4.ckpt")
    assert [s for s, _, _ in resumed] == list(range(5, 11))
    assert resumed == full[4:]  # same batches, same losses, bit for bit
    for (name, p), q in zip(module.policy.state_dict().items(), again.policy.state_dict().values()):
        assert torch.equal(p, q), name


def test_lora_checkpoint_refuses_a_changed_base(tmp_path, tiny_path):
    run(tmp_path / "a", 4)
    changed = AutoModelForCausalLM.from_pretrained(tiny_path)
    with torch.no_grad():
        changed.model.norm.weight.add_(1e-3)  # one frozen tensor differs slightly
    changed.save_pretrained(tmp_path / "other-base")
    with pytest.raises(ConfigError, match="model.init_args.policy"):
        run(
            tmp_path / "b",
            6,
            ckpt_path=tmp_path / "a" / "epoch=0-step=4.ckpt",
            policy=str(tmp_path / "other-base"),
        )


def test_full_fine_tuning_checkpoint_keeps_every_weight(tmp_path):
    pl.seed_everything(0)
    module = lit_pref.DPO(lr=1e-3)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer(2, [checkpoints], enable_checkpointing=True, limit_val_batches=0).fit(
        module, data_module(max_rows=48)
    )
    ckpt = torch.load(tmp_path / "epoch=0-step=2.ckpt", weights_only=False)
    assert set(ckpt["state_dict"]) >= {"policy." + k for k in module.policy.state_dict()}
    assert "lit_pref_base" not in ckpt
