"""CompanionRefresh: every N steps or N epochs, hard or EMA, any refreshable companion; MagnetUpdate is one."""

import lightning.pytorch as pl
import pytest
import torch

import lit_pref
from lit_pref.errors import ConfigError
from tests.helpers import data_module, trainer


def params_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_refresh_every_n_steps_syncs_a_dpo_reference():
    pl.seed_everything(0)
    module = lit_pref.DPO(reference=lit_pref.RefreshableCopy(), lr=5e-3)
    refresh = lit_pref.CompanionRefresh("reference", every_n_steps=2)
    trainer(4, [refresh]).fit(module, data_module(max_rows=64))
    assert int(module.reference.refreshes) == 2
    assert params_equal(module.reference.model, module.policy)  # refreshed after the last step


def test_refresh_every_n_epochs_with_ema():
    pl.seed_everything(0)
    module = lit_pref.DPO(reference=lit_pref.RefreshableCopy(), lr=5e-3)
    start = [p.detach().clone() for p in module_policy_after_configure(module)]
    refresh = lit_pref.CompanionRefresh("reference", every_n_epochs=1, ema_decay=0.5)
    trainer(6, [refresh]).fit(
        module, data_module(max_rows=48, batch_size=16)
    )  # 3 batches per epoch: 2 epochs
    assert int(module.reference.refreshes) == 2
    assert not params_equal(module.reference.model, module.policy)  # EMA: between the start and the policy
    moved = [not torch.equal(s, r) for s, r in zip(start, module.reference.model.parameters())]
    assert any(moved)


def module_policy_after_configure(module):
    module.configure_model()
    return module.policy.parameters()


@pytest.mark.parametrize("kwargs", [{}, {"every_n_steps": 2, "every_n_epochs": 1}])
def test_refresh_needs_exactly_one_schedule(kwargs):
    with pytest.raises(
        ConfigError, match="exactly one of every_n_steps, every_n_rollouts and every_n_epochs"
    ):
        lit_pref.CompanionRefresh("reference", **kwargs)


def test_refresh_of_a_frozen_companion_names_the_option():
    with pytest.raises(ConfigError, match="set model.init_args.reference: lit_pref.RefreshableCopy"):
        trainer(1, [lit_pref.CompanionRefresh("reference", every_n_steps=1)]).fit(
            lit_pref.DPO(), data_module(max_rows=32)
        )
