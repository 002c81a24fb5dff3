"""Declared data needs: a method's DataNeeds, handed to the data module once (apply_needs)."""

import re

import pytest

import lit_pref
from lit_pref.data.needs import LINKED_SETTINGS, DataNeeds
from lit_pref.data.schema import FORMATS
from lit_pref.errors import ConfigError
from tests.conftest import DATA, write_jsonl
from tests.data.common import make_dm


def test_data_needs_are_checked_when_declared():
    with pytest.raises(ConfigError, match=r"DataNeeds.formats must name row formats of \['demonstration'"):
        DataNeeds(formats=("unpaired",))
    with pytest.raises(ConfigError, match="DataNeeds.predict_format must be one of"):
        DataNeeds(predict_format="pairwise")
    with pytest.raises(ConfigError, match="DataNeeds.batch_repeats must be an integer >= 1"):
        DataNeeds(batch_repeats=0)


def test_every_method_declares_formats_the_table_knows():
    for name in ("DPO", "SFT", "RewardModel", "OutcomeModel", "CausalPO", "WSPO", "IRFT", "RFT", "MPO"):
        needs = getattr(lit_pref, name).data_needs
        assert needs.formats and set(needs.formats) <= set(FORMATS), name
    assert lit_pref.RewardModel.data_needs.predict_format == "auto"
    assert lit_pref.OutcomeModel.data_needs.predict_format == "auto"
    assert lit_pref.DPO.data_needs.predict_format == "prompt"


def test_a_subclass_setting_the_old_attributes_is_told_what_to_declare():
    with pytest.raises(TypeError, match=re.escape("declare `data_needs = lit_pref.DataNeeds(formats=(...)")):

        class Old(lit_pref.DPO):
            accepted_formats = ("pairwise",)


def test_wrong_format_error_comes_from_the_data_module(tokenizer):
    train = str(DATA / "reviews_sft_train.jsonl")
    dm = make_dm(tokenizer, train, max_rows=3)
    dm.setup("fit")
    with pytest.raises(ConfigError) as info:
        dm.apply_needs(DataNeeds(formats=("pairwise", "outcome")), "fit", method="MyMethod")
    assert str(info.value) == (
        "MyMethod trains on pairwise rows (columns ['chosen', 'rejected']) or outcome rows (columns ['response', "
        f"'outcome']) but data.train ({train}) has demonstration rows (detected from its columns). Point "
        "data.train at suitable data, or set data.format / data.columns (map the needed columns to yours)"
    )
    dm.apply_needs(DataNeeds(formats=("demonstration",), batch_repeats=3), "fit")
    assert dm.needs.batch_repeats == 3 and dm.train_dataloader().repeats == 3


def test_pair_responses_reloads_demonstrations_as_pairs(tmp_path, tokenizer):
    rows = [{"prompt": "Review the lamp.", "response": r} for r in ("Good lamp.", "Bad lamp.")]
    dm = make_dm(tokenizer, write_jsonl(tmp_path / "demos.jsonl", rows), batch_size=1)
    dm.setup("fit")
    assert dm.row_format == "demonstration"
    dm.apply_needs(DataNeeds(formats=("pairwise",), pair_responses=True), "fit")
    assert dm.row_format == "pairwise" and len(dm.datasets["train"]) == 1


def test_predict_rows_are_read_again_as_the_method_reads_them(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "scored.jsonl", [{"prompt": "Review the lamp.", "response": "Good lamp."}])
    dm = make_dm(tokenizer, None, predict=path)
    dm.setup("predict")
    assert dm.predict_row_format == "prompt"
    dm.apply_needs(DataNeeds(predict_format="auto"), "predict")
    assert dm.predict_row_format == "demonstration"
    dataset = dm.datasets["predict"]
    dm.apply_needs(DataNeeds(predict_format="auto"), "predict")  # read so already: not reloaded
    assert dm.datasets["predict"] is dataset


def test_linked_settings_are_what_the_cli_links_and_setup_copies(tokenizer):
    dm = make_dm(tokenizer, None, max_length=48, max_prompt_length=16, text_as_chat=True)
    assert dm.linked_settings() == {
        "tokenizer": "builtin:tiny",
        "max_length": 48,
        "max_prompt_length": 16,
        "text_as_chat": True,
    }
    assert tuple(dm.linked_settings()) == LINKED_SETTINGS
