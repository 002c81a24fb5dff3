"""The PreferenceDataModule end to end: sources, formats, columns, hold-out, fingerprints."""

import re

import pytest

from lit_pref.data import PreferenceDataModule
from lit_pref.errors import DataError
from lit_pref.models.logprobs import IGNORE_INDEX
from tests.conftest import DATA, write_jsonl
from tests.data.common import ANSWER, PAIR, RENDERED_PROMPT, SYSTEM, USER, ids, make_dm, read_jsonl


# -- (d) the data module end to end -------------------------------------------------------------------------
def test_datamodule_reviews_pairs_end_to_end():
    train_path, val_path = str(DATA / "reviews_pairs_train.jsonl"), str(DATA / "reviews_pairs_val.jsonl")
    dm = PreferenceDataModule(
        train=train_path, val=val_path, max_rows=6, batch_size=3, eval_batch_size=4,
        max_length=64, max_prompt_length=32, shuffle=False, val_fraction=0.5,
    )  # fmt: skip
    dm.setup("fit")
    tok = dm.tokenizer
    eos = tok.eos_token_id
    assert dm.row_format == "pairwise"
    train = dm.datasets["train"]
    assert len(train) == 6 and len(dm.datasets["val"]) == 6
    for i, (row, src) in enumerate(zip(train, read_jsonl(train_path, 6))):
        assert row["index"] == row["source_row"] == i
        assert row["prompt_ids"] == tok(src["prompt"])["input_ids"]
        assert row["chosen_ids"] == ids(tok, src["chosen"]) + [eos]
        assert row["rejected_ids"] == ids(tok, src["rejected"]) + [eos]

    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    for batch in batches:
        b = batch["num_pairs"]
        assert b == 3 and batch["input_ids"].shape[0] == 6 and batch["split"] == "train"
        for j, index in enumerate(batch["index"].tolist()):
            row = train[index]
            for k, completion in ((j, row["chosen_ids"]), (b + j, row["rejected_ids"])):
                n = len(row["prompt_ids"]) + len(completion)
                assert batch["input_ids"][k, :n].tolist() == row["prompt_ids"] + completion
                assert batch["input_ids"][k, n:].eq(tok.pad_token_id).all()
                assert batch["attention_mask"][k].tolist() == [1] * n + [0] * (
                    batch["input_ids"].shape[1] - n
                )
                assert batch["labels"][k, len(row["prompt_ids"]) : n].tolist() == completion
                assert (batch["labels"][k] != IGNORE_INDEX).sum().item() == len(completion)
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(6))

    assert list(dm.datasets["val"]["source_row"]) == list(
        range(6)
    )  # val given: val_fraction holds out nothing
    val_batches = list(dm.val_dataloader())
    assert [b["index"].tolist() for b in val_batches] == [[0, 1, 2, 3], [4, 5]]
    assert {b["split"] for b in val_batches} == {"val"}


def test_datamodule_reviews_pairs_chat_with_system_message(tokenizer):
    path = str(DATA / "reviews_pairs_chat.jsonl")
    dm = make_dm(tokenizer, path, max_rows=4)
    dm.setup("fit")
    assert dm.row_format == "pairwise"
    train = dm.datasets["train"]
    assert len(train) == 4
    for row, src in zip(train, read_jsonl(path, 4)):
        system, user = src["prompt"]
        assert system["role"] == "system"
        assert tokenizer.decode(row["prompt_ids"]) == (
            f"<|bos|><|system|>{system['content']}<|end|><|user|>{user['content']}<|end|><|assistant|>"
        )
        assert tokenizer.decode(row["chosen_ids"]) == src["chosen"][0]["content"] + "<|end|>"
        assert tokenizer.decode(row["rejected_ids"]) == src["rejected"][0]["content"] + "<|end|>"
        assert row["prompt_ids"].count(tokenizer.bos_token_id) == 1


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([PAIR, {**PAIR, "chosen": "Great lamp."}], "pairwise"),
        ([{"prompt": "Review the lamp.", "response": "Good lamp."}] * 2, "demonstration"),
        (
            [
                {"prompt": "Review the lamp.", "response": "Good lamp.", "outcome": 1.5, "propensity": 0.5},
                {"prompt": "Review the mug.", "response": "Bad mug.", "outcome": -1.0, "propensity": 1.0},
            ],
            "outcome",
        ),
        ([{"prompt": "Review the lamp."}, {"prompt": "Review the mug."}], "prompt"),
    ],
)
def test_format_detection(tmp_path, tokenizer, rows, expected):
    dm = make_dm(tokenizer, write_jsonl(tmp_path / "rows.jsonl", rows))
    dm.setup("fit")
    assert dm.row_format == expected
    batch = next(iter(dm.train_dataloader()))
    prompts = [tokenizer(r["prompt"])["input_ids"] for r in rows]
    if expected == "pairwise":
        assert batch["num_pairs"] == 2 and batch["input_ids"].shape[0] == 4
    elif expected in ("demonstration", "outcome"):
        assert batch["input_ids"].shape[0] == 2
        response = ids(tokenizer, rows[1]["response"]) + [tokenizer.eos_token_id]
        assert batch["labels"][1][batch["labels"][1] != IGNORE_INDEX].tolist() == response
    else:
        assert batch["prompt_input_ids"][1, -len(prompts[1]) :].tolist() == prompts[1]
        assert "labels" not in batch
    if expected == "outcome":
        assert batch["outcome"].tolist() == [1.5, -1.0]
        assert batch["propensity"].tolist() == [0.5, 1.0]


def test_format_detection_on_sft_file(tokenizer):
    dm = make_dm(tokenizer, str(DATA / "reviews_sft_train.jsonl"), max_rows=3)
    dm.setup("fit")
    assert dm.row_format == "demonstration" and len(dm.datasets["train"]) == 3


def test_predict_rows_are_prompts_left_padded(tmp_path, tokenizer):
    rows = [
        {"prompt": "Review the lamp."},
        {"prompt": "Hi"},
        {"prompt": "Write a one-line review of the mug."},
    ]
    path = write_jsonl(tmp_path / "prompts.jsonl", rows)
    dm = make_dm(tokenizer, None, predict=path, eval_batch_size=3)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    prompts = [tokenizer(r["prompt"])["input_ids"] for r in rows]
    width = max(map(len, prompts))
    assert len({len(p) for p in prompts}) == 3
    assert batch["prompt_input_ids"].tolist() == [
        [tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts
    ]
    assert batch["prompt_attention_mask"].tolist() == [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    assert batch["index"].tolist() == [0, 1, 2] and batch["split"] == "predict"


def test_predict_prompts_with_explicit_training_format(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Review the lamp."}, {"prompt": "Hi"}])
    dm = make_dm(tokenizer, str(DATA / "reviews_pairs_val.jsonl"), predict=path, format="pairwise")
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["prompt_input_ids"][1, -1].item() == tokenizer("Hi")["input_ids"][-1]


def test_several_training_sources(tmp_path, tokenizer):
    files = [str(DATA / "reviews_pairs_val.jsonl"), str(DATA / "reviews_pairs_train.jsonl")]
    dm = make_dm(tokenizer, files, max_rows=3)
    dm.setup("fit")
    assert list(dm.datasets["train"]["source_row"]) == [0, 1, 2, 0, 1, 2]
    assert list(dm.datasets["train"]["index"]) == list(range(6))
    first_of_second = read_jsonl(files[1], 1)[0]
    assert dm.datasets["train"][3]["prompt_ids"] == tokenizer(first_of_second["prompt"])["input_ids"]

    demos = write_jsonl(tmp_path / "demos.jsonl", [{"prompt": "A", "response": "B"}])
    with pytest.raises(DataError, match=re.escape("data.train: its sources have different row formats")):
        make_dm(tokenizer, [files[0], demos], max_rows=3).setup("fit")


def test_columns_mapping(tmp_path, tokenizer):
    rows = [{"question": "Review the lamp.", "good": "Good lamp.", "bad": "Bad lamp."}] * 2
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    dm = make_dm(tokenizer, path, columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    dm.setup("fit")
    assert dm.row_format == "pairwise"
    row = dm.datasets["train"][0]
    assert row["prompt_ids"] == tokenizer("Review the lamp.")["input_ids"]
    assert row["chosen_ids"] == ids(tokenizer, "Good lamp.") + [tokenizer.eos_token_id]
    assert row["rejected_ids"] == ids(tokenizer, "Bad lamp.") + [tokenizer.eos_token_id]

    with pytest.raises(
        DataError,
        match=re.escape(f"{path}: cannot tell the row format from its columns ['bad', 'good', 'question']"),
    ):
        make_dm(tokenizer, path).setup("fit")


def test_implicit_prompt_conversational_pairs(tmp_path, tokenizer):
    rows = [
        {
            "chosen": [SYSTEM, USER, ANSWER],
            "rejected": [SYSTEM, USER, {"role": "assistant", "content": "Bad lamp."}],
        },
        {
            "chosen": [
                USER,
                {"role": "assistant", "content": "Fine."},
                {"role": "user", "content": "Why?"},
                ANSWER,
            ],
            "rejected": [
                USER,
                {"role": "assistant", "content": "Fine."},
                {"role": "user", "content": "Why?"},
                {"role": "assistant", "content": "No."},
            ],
        },
    ]
    dm = make_dm(tokenizer, write_jsonl(tmp_path / "implicit.jsonl", rows))
    dm.setup("fit")
    first, second = dm.datasets["train"]
    assert tokenizer.decode(first["prompt_ids"]) == RENDERED_PROMPT
    assert tokenizer.decode(first["chosen_ids"]) == "The lamp is great.<|end|>"
    assert tokenizer.decode(first["rejected_ids"]) == "Bad lamp.<|end|>"
    assert tokenizer.decode(second["prompt_ids"]) == (
        "<|bos|><|user|>Review the lamp.<|end|><|assistant|>Fine.<|end|><|user|>Why?<|end|><|assistant|>"
    )
    assert tokenizer.decode(second["rejected_ids"]) == "No.<|end|>"


def test_outcome_rows_with_text_and_no_prompt(tmp_path, tokenizer):
    rows = [{"text": "The lamp is great.", "outcome": 1.0}, {"text": "Bad lamp.", "outcome": -0.5}]
    dm = make_dm(tokenizer, write_jsonl(tmp_path / "outcome.jsonl", rows))
    dm.setup("fit")
    assert dm.row_format == "outcome"
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    batch = next(iter(dm.train_dataloader()))
    for k, row in enumerate(rows):
        response = ids(tokenizer, row["text"]) + [eos]
        n = 1 + len(response)
        assert batch["input_ids"][k, :n].tolist() == [bos] + response
        assert batch["labels"][k, :n].tolist() == [IGNORE_INDEX] + response
        assert batch["labels"][k, n:].eq(IGNORE_INDEX).all()
    assert batch["outcome"].tolist() == [1.0, -0.5]
    assert "propensity" not in batch


def _holdout(tokenizer, seed, val_fraction=0.25, stage="fit"):
    dm = make_dm(
        tokenizer, str(DATA / "reviews_pairs_train.jsonl"), max_rows=20, val_fraction=val_fraction, seed=seed
    )
    dm.setup(stage)
    return dm


def test_val_fraction_hold_out(tokenizer):
    dm = _holdout(tokenizer, seed=0)
    train_rows, val_rows = list(dm.datasets["train"]["source_row"]), list(dm.datasets["val"]["source_row"])
    assert len(val_rows) == 5 and len(train_rows) == 15  # 0.25 of 20
    assert sorted(train_rows + val_rows) == list(range(20))
    assert dm.datasets["val"]["index"] == list(range(5)) and dm.datasets["train"]["index"] == list(range(15))

    again = _holdout(tokenizer, seed=0)
    assert list(again.datasets["val"]["source_row"]) == val_rows
    assert list(again.datasets["train"]["source_row"]) == train_rows
    assert again.fingerprints == dm.fingerprints
    assert dm.fingerprints["train"] != dm.fingerprints["val"]

    other = _holdout(tokenizer, seed=1)
    assert sorted(other.datasets["val"]["source_row"]) != sorted(val_rows)  # seed 0 vs 1 differ
    assert other.fingerprints["val"] != dm.fingerprints["val"]

    assert len(_holdout(tokenizer, seed=0, val_fraction=0.1).datasets["val"]) == 2


def test_validate_without_a_validation_split_then_fit(tokenizer):
    """`validate` with neither data.val nor val_fraction loads train alone; a later fit trains on it."""
    dm = _holdout(tokenizer, seed=0, val_fraction=0.0, stage="validate")
    assert "val" not in dm.datasets and dm.datasets["train"]["index"] == list(range(20))
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["index"].tolist() == [0, 1]


def test_fingerprints(tmp_path, tokenizer):
    rows = [PAIR, {**PAIR, "chosen": "Great lamp."}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)

    def fingerprint(**kwargs):
        dm = make_dm(tokenizer, path, **kwargs)
        dm.setup("fit")
        return dm.fingerprints["train"]

    base = fingerprint()
    assert fingerprint() == base
    assert fingerprint(max_length=65) != base
    assert fingerprint(max_prompt_length=31) != base
    write_jsonl(tmp_path / "pairs.jsonl", [PAIR, {**PAIR, "chosen": "Lovely lamp, really."}])
    changed = fingerprint()
    assert changed != base
    dm = make_dm(tokenizer, path)
    dm.setup("fit")
    assert dm.datasets["train"][1]["chosen_ids"] == ids(tokenizer, "Lovely lamp, really.") + [
        tokenizer.eos_token_id
    ]


def test_validation_interval_longer_than_an_epoch_is_clamped_to_the_epoch(caplog):
    """A config's val_check_interval 20 on 24 rows in batches of 8 (3 batches an epoch): Lightning refuses it; the
    data module clamps it to the epoch and says so, and validation runs at every epoch's end."""
    import lightning.pytorch as pl

    import lit_pref
    from tests.helpers import data_module, trainer

    class ValidationSteps(pl.Callback):
        def __init__(self):
            self.steps = []

        def on_validation_epoch_end(self, trainer_, module):
            self.steps.append(trainer_.global_step)

    pl.seed_everything(0)
    seen = ValidationSteps()
    run = trainer(8, [seen], val_check_interval=20, limit_val_batches=1)
    with caplog.at_level("INFO"):
        run.fit(lit_pref.SFT(lr=1e-3), data_module("sft", max_rows=24, batch_size=8))
    assert seen.steps == [3, 6]
    assert run.val_check_interval == 3
    notes = [r.getMessage() for r in caplog.records if "val_check_interval" in r.getMessage()]
    assert notes == [
        "lit_pref: trainer.val_check_interval (20) is more than the 3 training batches of an epoch (per process); "
        "validating every 3 batches (at each epoch's end) instead"
    ]
