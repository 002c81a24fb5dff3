"""Bad input: every error names the file, row, column or option."""

import re

import pytest

from lit_pref.data import PreferenceDataModule
from lit_pref.data.render import Renderer
from lit_pref.errors import DataError, LitPrefError
from tests.conftest import DATA, write_jsonl
from tests.data.common import PAIR, USER, make_dm


# -- (e) bad input ------------------------------------------------------------------------------------------
def where(path, row, column):
    return re.escape(f"{path}, row {row}, column '{column}'")


def setup_rows(tmp_path, tokenizer, rows, name="rows.jsonl", **kwargs):
    path = write_jsonl(tmp_path / name, rows)
    make_dm(tokenizer, path, batch_size=1, **kwargs).setup("fit")
    return path


def test_missing_column_lists_available_columns(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "A", "chosen": "B", "bad": "C"}])
    with pytest.raises(
        DataError, match=re.escape(f"{path}: the pairwise format needs a column 'rejected'")
    ) as err:
        make_dm(tokenizer, path, format="pairwise").setup("fit")
    assert "['bad', 'chosen', 'prompt']" in str(err.value)


def test_null_value_names_file_row_column(tmp_path, tokenizer):
    path = str(tmp_path / "rows.jsonl")
    with pytest.raises(DataError, match=where(path, 1, "chosen") + ": the value is missing"):
        setup_rows(tmp_path, tokenizer, [PAIR, {**PAIR, "chosen": None}])


def test_null_in_mapped_column_names_the_users_column(tmp_path, tokenizer):
    rows = [{"q": "A", "good": "B", "bad": "C"}, {"q": "A", "good": "B", "bad": None}]
    path = str(tmp_path / "rows.jsonl")
    with pytest.raises(DataError, match=where(path, 1, "bad")):
        setup_rows(tmp_path, tokenizer, rows, columns={"prompt": "q", "chosen": "good", "rejected": "bad"})


def test_empty_text_names_file_row_column(tmp_path, tokenizer):
    path = str(tmp_path / "rows.jsonl")
    with pytest.raises(DataError, match=where(path, 2, "rejected") + ": the text is empty"):
        setup_rows(tmp_path, tokenizer, [PAIR, PAIR, {**PAIR, "rejected": ""}])


def test_int_where_text_expected(tmp_path, tokenizer):
    path = str(tmp_path / "all.jsonl")
    with pytest.raises(DataError, match=where(path, 0, "prompt") + ".*got int 5"):
        setup_rows(tmp_path, tokenizer, [{**PAIR, "prompt": 5}], name="all.jsonl")
    # mixed types in one column: either the loader rejects the file or the row is reported
    path = str(tmp_path / "mixed.jsonl")
    with pytest.raises(DataError, match=re.escape(path)) as err:
        setup_rows(tmp_path, tokenizer, [PAIR, {**PAIR, "prompt": 5}], name="mixed.jsonl")
    if "could not be parsed" not in str(err.value):
        assert re.search(where(path, 1, "prompt") + ".*got int 5", str(err.value))


def test_wrong_outcome_type(tmp_path, tokenizer):
    path = str(tmp_path / "rows.jsonl")
    with pytest.raises(DataError, match=where(path, 0, "outcome") + ": expected a number, got str 'high'"):
        setup_rows(tmp_path, tokenizer, [{"text": "A lamp.", "outcome": "high"}])


def test_nan_outcome_in_json(tmp_path, tokenizer):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "A lamp.", "outcome": 1.0}\n{"text": "A mug.", "outcome": NaN}\n')
    with pytest.raises(DataError, match=where(path, 1, "outcome") + ": the number is nan"):
        make_dm(tokenizer, str(path), batch_size=1).setup("fit")


def test_nan_outcome_in_csv(tmp_path, tokenizer):
    path = tmp_path / "rows.csv"
    path.write_text("text,outcome\nA lamp.,1.0\nA mug.,0.5\nA cup.,nan\n")
    with pytest.raises(
        DataError, match=where(path, 2, "outcome") + re.escape(": the number is missing (null or NaN)")
    ):
        make_dm(tokenizer, str(path), batch_size=1).setup("fit")


def test_csv_outcomes_load(tmp_path, tokenizer):
    path = tmp_path / "rows.csv"
    path.write_text("text,outcome\nA lamp.,1.0\nA mug.,-2.5\n")
    dm = make_dm(tokenizer, str(path))
    dm.setup("fit")
    assert dm.row_format == "outcome" and next(iter(dm.train_dataloader()))["outcome"].tolist() == [1.0, -2.5]


@pytest.mark.parametrize("propensity", [1.5, 0.0, -0.2])
def test_propensity_outside_unit_interval(tmp_path, tokenizer, propensity):
    rows = [
        {"prompt": "A", "response": "B", "outcome": 1.0, "propensity": 1.0},  # 1 is allowed
        {"prompt": "A", "response": "B", "outcome": 1.0, "propensity": propensity},
    ]
    path = str(tmp_path / "rows.jsonl")
    with pytest.raises(
        DataError, match=where(path, 1, "propensity") + f": propensity {propensity} is outside"
    ):
        setup_rows(tmp_path, tokenizer, rows)


def test_malformed_message(tmp_path, tokenizer):
    rows = [
        {
            "prompt": [USER],
            "chosen": [{"role": "assistant", "content": "A"}],
            "rejected": [{"role": "assistant", "text": "B"}],
        }
    ]
    path = str(tmp_path / "rows.jsonl")
    with pytest.raises(DataError, match=where(path, 0, "rejected") + ": message 0 is"):
        setup_rows(tmp_path, tokenizer, rows)


def test_plain_pairs_without_prompt(tmp_path, tokenizer):
    path = str(tmp_path / "rows.jsonl")
    with pytest.raises(DataError, match=where(path, 0, "prompt") + ": the row has no prompt"):
        setup_rows(tmp_path, tokenizer, [{"chosen": "A", "rejected": "B"}])


def test_unknown_extension_and_missing_file(tmp_path, tokenizer):
    path = tmp_path / "rows.txt"
    path.write_text("hello\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: unsupported file type '.txt'")):
        make_dm(tokenizer, str(path)).setup("fit")
    missing = str(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match=re.escape(f"{missing}: no such file")):
        make_dm(tokenizer, missing).setup("fit")


def test_unparsable_file_names_the_file(tmp_path, tokenizer):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "A", "chosen": "B", "rejected": "C"}\n{not json\n')
    with pytest.raises(DataError, match=re.escape(f"{path}, line 2: Expecting property name")):
        make_dm(tokenizer, str(path)).setup("fit")


def test_unknown_columns_key():
    with pytest.raises(DataError, match=re.escape("data.columns has unknown field(s) ['question']")):
        PreferenceDataModule(columns={"question": "q"})


def test_bad_lengths_and_fractions(tokenizer):
    with pytest.raises(
        DataError,
        match=re.escape(
            "data.max_prompt_length (64) must be at least 1 and smaller than data.max_length (64)"
        ),
    ):
        make_dm(tokenizer, str(DATA / "reviews_pairs_val.jsonl"), max_length=64, max_prompt_length=64).setup(
            "fit"
        )
    with pytest.raises(DataError, match=re.escape("max_prompt_length (80)")):
        Renderer(tokenizer, max_length=64, max_prompt_length=80)
    with pytest.raises(DataError, match=re.escape("data.val_fraction must be in [0, 1), got 1.0")):
        PreferenceDataModule(val_fraction=1.0)


def test_splits_with_different_formats(tokenizer):
    dm = make_dm(
        tokenizer, str(DATA / "reviews_pairs_val.jsonl"), val=str(DATA / "reviews_sft_val.jsonl"), max_rows=2
    )
    # format: auto names the column the val split lacks to be pairwise like train
    with pytest.raises(DataError, match="reviews_sft_val.jsonl: the pairwise format needs a column 'chosen'"):
        dm.setup("fit")
    dm = make_dm(
        tokenizer,
        str(DATA / "reviews_pairs_val.jsonl"),
        val=str(DATA / "reviews_sft_val.jsonl"),
        max_rows=2,
        format="pairwise",
    )
    with pytest.raises(DataError, match="reviews_sft_val.jsonl: the pairwise format needs a column 'chosen'"):
        dm.setup("fit")


def test_errors_are_lit_pref_errors():
    assert issubclass(DataError, LitPrefError) and issubclass(DataError, ValueError)
