"""Reward and outcome models score text the way their training rows were rendered, and `predict` scores."""

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import lit_pref
from tests.conftest import DATA
from tests.helpers import trainer


@pytest.mark.parametrize("text_as_chat", [True, False])
def test_predict_scores_rows_as_score_texts_does(text_as_chat):
    pl.seed_everything(0)
    source = str(DATA / "reviews_sft_val.jsonl")
    data = lit_pref.PreferenceDataModule(train=source, predict=source, text_as_chat=text_as_chat, max_rows=8,
                                         max_length=64, max_prompt_length=32, batch_size=4)  # fmt: skip
    module = lit_pref.RewardModel()
    batches = trainer(1).predict(module, data)
    rows = [row for batch in batches for row in batch]
    assert [r["index"] for r in rows] == list(range(8))
    texts = [json.loads(line) for line in Path(source).read_text().splitlines()][:8]
    direct = module.score_texts([t["prompt"] for t in texts], [t["response"] for t in texts])
    assert module.hparams.text_as_chat is text_as_chat  # the data module's setting reached the scorer
    torch.testing.assert_close(torch.tensor([r["score"] for r in rows]), direct, atol=1e-5, rtol=0)


def test_the_rendering_matters_for_the_scores():
    module = lit_pref.RewardModel(text_as_chat=True)
    module.configure_model()
    prompts, responses = ["Write a one-line review of the lamp."], ["The lamp is fine."]
    chat = module.score_texts(prompts, responses)
    module.hparams.text_as_chat = False
    assert not torch.allclose(chat, module.score_texts(prompts, responses))  # so the test above can fail


def test_predict_scores_both_sides_of_pairs():
    source = str(DATA / "reviews_pairs_val.jsonl")
    data = lit_pref.PreferenceDataModule(train=source, predict=source, text_as_chat=True, max_rows=4,
                                         max_length=64, max_prompt_length=32, batch_size=4)  # fmt: skip
    rows = trainer(1).predict(lit_pref.RewardModel(), data)[0]
    assert len(rows) == 4 and all({"index", "chosen_score", "rejected_score"} == set(r) for r in rows)


def test_an_exported_reward_model_scores_as_it_was_trained(tmp_path):
    pl.seed_everything(0)
    source = str(DATA / "reviews_pairs_val.jsonl")
    data = lit_pref.PreferenceDataModule(train=source, text_as_chat=True, max_rows=16, max_length=48,
                                         max_prompt_length=24, batch_size=8)  # fmt: skip
    module = lit_pref.RewardModel(lr=1e-3)
    trainer(2).fit(module, data)
    module.eval()
    lit_pref.callbacks.export_module(module, tmp_path / "rm")
    prompts, responses = ["Write a one-line review of the lamp."] * 2, ["The lamp is fine.", "Bad lamp."]
    scorer = lit_pref.RewardModelScorer(str(tmp_path / "rm"))  # no rendering options: read from the export
    assert scorer.renderer.text_as_chat and scorer.renderer.max_length == 48
    torch.testing.assert_close(
        scorer(prompts, responses), module.score_texts(prompts, responses), atol=1e-5, rtol=0
    )
