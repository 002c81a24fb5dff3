"""SFT, DPO and the reward model on the tiny model: exact values at init and metrics that must move."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

import lit_pref
from lit_pref.errors import ConfigError
from tests.helpers import Recorder, data_module, trainer


def first_batch(dm, split="train"):
    dm.setup("fit")
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return next(iter(loader))


@pytest.mark.slow
def test_dpo_loss_is_log2_at_init_and_accuracy_rises():
    pl.seed_everything(0)
    dm = data_module()
    module = lit_pref.DPO(lr=1e-3, beta=0.1)
    rec = Recorder()
    trainer(24, [rec], limit_val_batches=4).fit(module, dm)
    assert rec.steps[0][1] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 0
    result = trainer(1).validate(module, dm, verbose=False)[0]
    assert result["val/rewards/accuracies"] >= 0.9
    assert result["val/rewards/margins"] > 0.5
    assert result["val/loss"] < 0.5


@pytest.mark.parametrize("loss_type", ["ipo", "hinge"])
def test_dpo_variants_train(loss_type):
    pl.seed_everything(0)
    dm = data_module()
    module = lit_pref.DPO(lr=1e-3, beta=0.5, loss_type=loss_type)
    rec = Recorder()
    trainer(12, [rec]).fit(module, dm)
    expected_init = (0 - 1 / (2 * 0.5)) ** 2 if loss_type == "ipo" else 1.0  # h = 0 at init
    assert rec.steps[0][1] == pytest.approx(expected_init, abs=1e-6)
    assert rec.steps[-1][1] < 0.8 * expected_init


def test_sft_lowers_validation_nll():
    pl.seed_everything(0)
    dm = data_module("sft")
    module = lit_pref.SFT(lr=2e-3)
    before = trainer(1).validate(module, dm, verbose=False)[0]["val/loss"]
    trainer(30).fit(module, dm)
    after = trainer(1).validate(module, dm, verbose=False)[0]["val/loss"]
    assert before > 6.0  # ~log(vocab) for a random model
    assert after < 0.5 * before


@pytest.mark.slow
def test_reward_model_learns_preferences_and_scores_text():
    pl.seed_everything(0)
    dm = data_module()
    module = lit_pref.RewardModel(lr=2e-3)
    trainer(30).fit(module, dm)
    result = trainer(1).validate(module, dm, verbose=False)[0]
    assert result["val/rewards/accuracies"] >= 0.85
    module.eval()
    scores = module.score_texts(
        ["Write a one-line review of the lamp."] * 2,
        ["The lamp is wonderful.", "The lamp is terrible."],
    )  # rendered with the chat template, as the data module rendered the training rows
    assert scores[0] > scores[1]


def test_reward_model_reads_last_attended_token_whatever_the_padding():
    pl.seed_everything(0)
    module = lit_pref.RewardModel()
    module.configure_model()
    module.eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    pad = module.tokenizer.pad_token_id
    right = torch.tensor([[5, 6, 7, 8, pad, pad]])
    left = torch.tensor([[pad, pad, 5, 6, 7, 8]])
    plain = module.scores(ids, torch.ones_like(ids))
    r = module.scores(right, torch.tensor([[1, 1, 1, 1, 0, 0]]))
    assert torch.allclose(plain, r, atol=1e-5)
    # left padding shifts positions (no position_ids given), so only check it reads a real token, not padding
    assert torch.isfinite(module.scores(left, torch.tensor([[0, 0, 1, 1, 1, 1]]))).all()


def test_algorithm_rejects_wrong_row_format():
    dm = data_module("sft")
    with pytest.raises(
        ConfigError,
        match=r"DPO trains on pairwise rows \(columns \['chosen', 'rejected'\]\) but data.train \(.*reviews_sft_train"
        r".jsonl\) has demonstration rows \(detected from its columns\)",
    ):
        trainer(1).fit(lit_pref.DPO(), dm)
