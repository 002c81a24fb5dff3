"""Companion-model providers agree with each other and keep their state the way they promise."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

import lit_pref
from lit_pref.errors import ConfigError
from lit_pref.models.logprobs import sequence_logps
from tests.helpers import data_module, trainer


def batches(dm, split):
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return list(loader)[:2]


def test_disabled_adapter_equals_the_base_model():
    pl.seed_everything(0)
    dm = data_module(max_rows=48)
    module = lit_pref.DPO(lora=lit_pref.LoraSettings(r=4), lr=5e-3)
    trainer(4).fit(module, dm)  # the adapter is no longer zero
    assert isinstance(module.reference, lit_pref.DisabledAdapter)
    base = lit_pref.models.load_causal_lm("builtin:tiny").eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        expected = sequence_logps(base, batch).sum
        trained = sequence_logps(module.policy, batch).sum
    assert torch.allclose(module.reference.token_logps(batch).sum, expected, atol=1e-5)
    assert not torch.allclose(trained, expected, atol=1e-3)  # so the comparison above means something
    assert module.policy.training  # the reference pass put the policy back in train mode


def test_disabled_adapter_without_lora_is_a_startup_error():
    with pytest.raises(ConfigError, match="DisabledAdapter needs a LoRA policy"):
        trainer(1).fit(lit_pref.DPO(reference=lit_pref.DisabledAdapter()), data_module(max_rows=32))


def test_precomputed_matches_live_reference_and_is_cached(tmp_path):
    pl.seed_everything(0)
    dm = data_module(max_rows=48)
    cache = tmp_path / "logps"
    live = lit_pref.DPO(reference=lit_pref.FrozenCopy())
    pre = lit_pref.DPO(reference=lit_pref.Precomputed(cache_dir=str(cache)))
    trainer(1, limit_train_batches=1, limit_val_batches=1).fit(pre, dm)
    assert pre.reference.source.model is None  # freed after caching
    files = sorted(cache.glob("*.pt"))
    assert len(files) == 2  # train and val
    live.configure_model()
    for split in ("train", "val"):
        for batch in batches(dm, split):
            a, b = live.reference.token_logps(batch), pre.reference.token_logps(batch)
            assert torch.equal(a.mask, b.mask)
            assert torch.allclose(a.logps, b.logps, atol=1e-5)
    # a second run reads the files instead of recomputing them
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = lit_pref.DPO(reference=lit_pref.Precomputed(cache_dir=str(cache)))
    trainer(1, limit_train_batches=1, limit_val_batches=1).fit(again, data_module(max_rows=48))
    assert [f.stat().st_mtime_ns for f in sorted(cache.glob("*.pt"))] == mtimes
    # changed data (another length limit) gets its own cache entries
    other = data_module(max_rows=48)
    other.max_length = 48
    trainer(1, limit_train_batches=1, limit_val_batches=1).fit(
        lit_pref.DPO(reference=lit_pref.Precomputed(cache_dir=str(cache))), other
    )
    assert len(list(cache.glob("*.pt"))) == 4


def test_precomputed_refuses_a_refreshable_source():
    with pytest.raises(ConfigError, match="cannot wrap a RefreshableCopy"):
        lit_pref.Precomputed(source=lit_pref.RefreshableCopy())


def test_refreshable_copy_refresh_and_ema():
    pl.seed_everything(0)
    dm = data_module(max_rows=32)
    module = lit_pref.DPO(reference=lit_pref.RefreshableCopy(), lr=5e-3)
    trainer(3).fit(module, dm)
    ref = module.reference
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        policy_logps = sequence_logps(module.policy, batch).sum
    assert not torch.allclose(ref.token_logps(batch).sum, policy_logps, atol=1e-3)
    old = [p.clone() for p in ref.model.parameters()]
    ref.ema_update(module.policy, decay=0.75)
    for before, after, theirs in zip(old, ref.model.parameters(), module.policy.parameters()):
        assert torch.allclose(after, 0.75 * before + 0.25 * theirs, atol=1e-6)
    ref.refresh_from(module.policy)
    assert torch.allclose(ref.token_logps(batch).sum, policy_logps, atol=1e-5)
    assert int(ref.refreshes) == 2
    assert not any(p.requires_grad for p in ref.model.parameters())
