"""Collation: padding, -100 labels, chosen + rejected concatenation, left-padded prompts."""

from lit_pref.data.collate import Collator
from lit_pref.models.logprobs import IGNORE_INDEX

# -- (c) collation ------------------------------------------------------------------------------------------
PAD = 99
PAIR_ROWS = [
    {"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6], "index": 7},
    {"prompt_ids": [1], "chosen_ids": [8, 9, 10, 11], "rejected_ids": [12, 13], "index": 3},
]


def test_collator_pairwise_by_hand():
    batch = Collator("pairwise", pad_id=PAD, split="val")(PAIR_ROWS)
    x = -100
    assert batch["input_ids"].tolist() == [
        [1, 2, 3, 4, 5],  # prompt 0 + chosen 0
        [1, 8, 9, 10, 11],  # prompt 1 + chosen 1
        [1, 2, 3, 6, PAD],  # prompt 0 + rejected 0
        [1, 12, 13, PAD, PAD],  # prompt 1 + rejected 1
    ]
    assert batch["labels"].tolist() == [
        [x, x, x, 4, 5],
        [x, 8, 9, 10, 11],
        [x, x, x, 6, x],
        [x, 12, 13, x, x],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0],
    ]
    assert batch["num_pairs"] == 2
    assert batch["index"].tolist() == [7, 3]
    assert batch["split"] == "val"
    assert "prompt_input_ids" not in batch


def test_collator_pad_to_multiple_of():
    batch = Collator("pairwise", pad_id=PAD, pad_to_multiple_of=4)(PAIR_ROWS)
    assert batch["input_ids"].shape == (4, 8)
    assert batch["input_ids"][:, 5:].eq(PAD).all()
    assert batch["labels"][:, 5:].eq(IGNORE_INDEX).all()
    assert batch["attention_mask"].sum(-1).tolist() == [5, 5, 4, 3]
    assert batch["split"] == "train"


def test_collator_outcome_and_demonstration():
    rows = [
        {"prompt_ids": [1, 2], "response_ids": [5], "outcome": 1.5, "propensity": 0.25, "index": 0},
        {"prompt_ids": [1], "response_ids": [6, 7, 8], "outcome": -2.0, "propensity": 1.0, "index": 1},
    ]
    batch = Collator("outcome", pad_id=PAD)(rows)
    assert batch["input_ids"].tolist() == [[1, 2, 5, PAD], [1, 6, 7, 8]]
    assert batch["labels"].tolist() == [[-100, -100, 5, -100], [-100, 6, 7, 8]]
    assert batch["outcome"].tolist() == [1.5, -2.0]
    assert batch["propensity"].tolist() == [0.25, 1.0]
    assert "num_pairs" not in batch

    batch = Collator("demonstration", pad_id=PAD)(
        [{k: r[k] for k in ("prompt_ids", "response_ids", "index")} for r in rows]
    )
    assert batch["input_ids"].tolist() == [[1, 2, 5, PAD], [1, 6, 7, 8]]
    assert "outcome" not in batch and "propensity" not in batch


def test_collator_prompt_rows_are_left_padded():
    rows = [
        {"prompt_ids": [1, 2, 3], "prompt_text": '"a"', "preference": "short", "index": 0},
        {"prompt_ids": [4], "prompt_text": '"b"', "preference": "long", "index": 1},
    ]
    batch = Collator("prompt", pad_id=PAD)(rows)
    assert batch["prompt_input_ids"].tolist() == [[1, 2, 3], [PAD, PAD, 4]]
    assert batch["prompt_attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["preference"] == ["short", "long"]
    assert "input_ids" not in batch
