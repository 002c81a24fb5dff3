"""Resume equality, what checkpoints hold, and the atomic HF export."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

import lit_pref
from lit_pref.callbacks.export import export_module
from tests.helpers import Recorder, data_module, trainer


def run(ckpt_dir: Path, steps: int, ckpt_path=None, reference=None, prefix_sharing=False):
    pl.seed_everything(0)
    module = lit_pref.DPO(lr=1e-3, warmup_steps=3, lr_schedule="linear", reference=reference,
                          prefix_sharing=prefix_sharing)  # fmt: skip
    rec = Recorder()
    checkpoints = ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=4, save_top_k=-1)
    trainer(steps, [rec, checkpoints], enable_checkpointing=True, limit_val_batches=0).fit(
        module, data_module(max_rows=80), ckpt_path=ckpt_path
    )
    return rec.steps, module


@pytest.mark.parametrize("reference", ["frozen", "refreshable"])
def test_resume_mid_epoch_continues_the_same_trajectory(tmp_path, reference):
    make = (lambda: lit_pref.RefreshableCopy()) if reference == "refreshable" else (lambda: None)
    full, _ = run(tmp_path / "a", 10, reference=make())  # 5 batches per epoch: crosses an epoch boundary
    resumed, module = run(
        tmp_path / "b", 10, ckpt_path=tmp_path / "a" / "epoch=0-step=4.ckpt", reference=make()
    )
    assert [s for s, _, _ in resumed] == list(range(5, 11))
    assert resumed == full[4:]  # same batches, same losses, bit for bit on CPU


@pytest.mark.slow
def test_resume_with_shared_prefixes_continues_the_same_trajectory_bit_for_bit(tmp_path):
    """Prefix sharing (the DPO default) resumes bit for bit too. It did not while the layout's gather was advanced
    indexing, whose backward adds a shared prompt token's gradients atomically across threads (at 2 threads two
    identical runs differed by ~1e-7); `index_select` adds them in a fixed order."""
    full, _ = run(tmp_path / "a", 10, prefix_sharing=True)
    again, _ = run(tmp_path / "c", 10, prefix_sharing=True)
    resumed, _ = run(
        tmp_path / "b", 10, ckpt_path=tmp_path / "a" / "epoch=0-step=4.ckpt", prefix_sharing=True
    )
    assert again == full
    assert resumed == full[4:]


def test_checkpoint_holds_persistent_companions_only(tmp_path):
    run(tmp_path / "f", 4)
    state = torch.load(tmp_path / "f" / "epoch=0-step=4.ckpt", weights_only=False)["state_dict"]
    assert any(k.startswith("policy.") for k in state)
    assert not any(k.startswith("reference.") for k in state)  # a frozen copy is rebuilt, not stored
    run(tmp_path / "r", 4, reference=lit_pref.RefreshableCopy())
    state = torch.load(tmp_path / "r" / "epoch=0-step=4.ckpt", weights_only=False)["state_dict"]
    assert "reference.refreshes" in state and any(k.startswith("reference.model.") for k in state)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_export_reloads_with_transformers(tmp_path):
    pl.seed_everything(0)
    module = lit_pref.DPO(lr=1e-3)
    trainer(3).fit(module, data_module(max_rows=48))
    module.policy.eval()
    ids = torch.tensor([[1, 5, 100, 200, 300]])
    path = export_module(module, tmp_path / "full")
    assert torch.allclose(
        logits(AutoModelForCausalLM.from_pretrained(path), ids), logits(module.policy, ids), atol=1e-5
    )
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind


def test_lora_export_merged_or_as_adapter(tmp_path):
    from peft import PeftModel

    pl.seed_everything(0)
    module = lit_pref.DPO(lora=lit_pref.LoraSettings(r=4), lr=5e-3)
    trainer(3).fit(module, data_module(max_rows=48))
    module.policy.eval()
    ids = torch.tensor([[1, 5, 100, 200, 300]])
    expected = logits(module.policy, ids)
    merged = AutoModelForCausalLM.from_pretrained(export_module(module, tmp_path / "merged"))
    assert torch.allclose(logits(merged, ids), expected, atol=1e-5)
    adapter_dir = export_module(module, tmp_path / "adapter", merge_lora=False)
    assert (adapter_dir / "adapter_config.json").exists()
    base = lit_pref.models.load_causal_lm("builtin:tiny")
    assert torch.allclose(logits(PeftModel.from_pretrained(base, adapter_dir), ids), expected, atol=1e-5)


def test_reward_model_export_loads_as_sequence_classifier(tmp_path):
    pl.seed_everything(0)
    module = lit_pref.RewardModel(lr=1e-3)
    trainer(2).fit(module, data_module(max_rows=48))
    module.eval()
    path = export_module(module, tmp_path / "rm")
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    ids = torch.tensor([[1, 5, 100, 200, 300]])
    with torch.no_grad():
        assert torch.allclose(
            hf(input_ids=ids).logits.squeeze(-1), module.scores(ids, torch.ones_like(ids)), atol=1e-5
        )
