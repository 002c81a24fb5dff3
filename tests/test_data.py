"""Rendering, truncation, collation, the PreferenceDataModule, data errors and the resumable loader."""

import json
import re

import pytest

from lit_pref.data import PreferenceDataModule
from lit_pref.data.collate import Collator
from lit_pref.data.loader import EpochShuffleSampler, ResumableDataLoader
from lit_pref.data.render import Renderer
from lit_pref.errors import DataError, LitPrefError
from lit_pref.models.logprobs import IGNORE_INDEX
from tests.conftest import DATA, write_jsonl

SYSTEM = {"role": "system", "content": "Be short."}
USER = {"role": "user", "content": "Review the lamp."}
ANSWER = {"role": "assistant", "content": "The lamp is great."}
RENDERED_PROMPT = "<|bos|><|system|>Be short.<|end|><|user|>Review the lamp.<|end|><|assistant|>"


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def make_dm(tokenizer, train, **kwargs) -> PreferenceDataModule:
    """A data module that reuses the session tokenizer (setup would load the same one)."""
    kwargs = {"batch_size": 2, "max_length": 64, "max_prompt_length": 32, "shuffle": False, **kwargs}
    dm = PreferenceDataModule(train=train, **kwargs)
    dm.tokenizer = tokenizer
    return dm


def read_jsonl(path, n):
    with open(path) as f:
        return [json.loads(line) for line, _ in zip(f, range(n))]


# -- (a) rendering ------------------------------------------------------------------------------------------
def test_conversational_prompt_and_completion(tokenizer):
    r = Renderer(tokenizer, max_length=128, max_prompt_length=64)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    prompt_ids = r.prompt_ids([SYSTEM, USER], [ANSWER])
    completion_ids = r.completion_ids([SYSTEM, USER], [ANSWER])

    assert tokenizer.decode(prompt_ids) == RENDERED_PROMPT
    assert prompt_ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    assert tokenizer.decode(completion_ids) == "The lamp is great." + "<|end|>"
    full = tokenizer.apply_chat_template([SYSTEM, USER, ANSWER], tokenize=False)
    assert full == RENDERED_PROMPT + "The lamp is great.<|end|>"
    assert tokenizer.decode(prompt_ids + completion_ids) == full
    assert (prompt_ids + completion_ids).count(bos) == 1 and prompt_ids[0] == bos
    assert completion_ids[-1] == eos and completion_ids.count(eos) == 1


def test_conversational_completion_already_ending_in_eos_text(tokenizer):
    r = Renderer(tokenizer, max_length=128, max_prompt_length=64)
    eos = tokenizer.eos_token_id
    plain = r.completion_ids([USER], [ANSWER])
    for content in ("The lamp is great.<|end|>", "The lamp is great.<|end|><|end|>"):
        got = r.completion_ids([USER], [{"role": "assistant", "content": content}])
        assert got == plain
        assert got[-1] == eos and got.count(eos) == 1


def test_plain_strings_without_chat_template(tokenizer):
    r = Renderer(tokenizer, max_length=128, max_prompt_length=64, text_as_chat=False)
    eos = tokenizer.eos_token_id
    specials = set(tokenizer.all_special_ids)
    prompt_ids = r.prompt_ids("Write a review.", "Good.")
    assert prompt_ids == tokenizer("Write a review.")["input_ids"]
    assert not specials & set(prompt_ids)  # no template tokens
    expected = ids(tokenizer, "Good.") + [eos]
    assert r.completion_ids("Write a review.", "Good.") == expected
    assert r.completion_ids("Write a review.", "Good.<|end|>") == expected  # EOS once
    assert r.completion_ids("Write a review.", "Good.<|end|><|end|>") == expected
    assert tokenizer.decode(r.prompt_ids("Write a review.") + expected) == "Write a review.Good.<|end|>"


def test_plain_strings_with_text_as_chat(tokenizer):
    r = Renderer(tokenizer, max_length=128, max_prompt_length=64, text_as_chat=True)
    prompt_ids = r.prompt_ids("Write a review.", "Good.")
    assert tokenizer.decode(prompt_ids) == "<|bos|><|user|>Write a review.<|end|><|assistant|>"
    assert tokenizer.decode(r.completion_ids("Write a review.", "Good.")) == "Good.<|end|>"
    assert r.completion_ids("Write a review.", "Good.<|end|>") == r.completion_ids("Write a review.", "Good.")


def test_empty_prompt_starts_with_bos(tokenizer):
    r = Renderer(tokenizer, max_length=32, max_prompt_length=8)
    assert r.prompt_ids("") == [tokenizer.bos_token_id]
    assert r.encode("", "Bad lamp.") == (
        [tokenizer.bos_token_id],
        ids(tokenizer, "Bad lamp.") + [tokenizer.eos_token_id],
    )


def test_conversational_rows_need_a_chat_template():
    class NoTemplate:
        bos_token_id, eos_token_id, chat_template = 1, 2, None

    r = Renderer(NoTemplate(), max_length=16, max_prompt_length=8)
    with pytest.raises(DataError, match="no chat template"):
        r.prompt_ids([USER])
    with pytest.raises(DataError, match="no chat template"):
        Renderer(NoTemplate(), max_length=16, max_prompt_length=8, text_as_chat=True).prompt_ids("hi")


# -- (b) truncation -----------------------------------------------------------------------------------------
LONG_PROMPT = "Write a one-line review of the old camera, the new phone and the quiet kettle, please."
LONG_ANSWER = "The camera is great, the phone is really fast and the kettle is quiet and warm."


@pytest.mark.parametrize("chat", [False, True])
def test_truncation_keeps_prompt_end_and_completion_start(tokenizer, chat):
    prompt = [SYSTEM, {"role": "user", "content": LONG_PROMPT}] if chat else LONG_PROMPT
    completion = [{"role": "assistant", "content": LONG_ANSWER}] if chat else LONG_ANSWER
    full = Renderer(tokenizer, max_length=512, max_prompt_length=256)
    full_prompt, full_completion = (
        full.prompt_ids(prompt, completion),
        full.completion_ids(prompt, completion),
    )
    assert len(full_prompt) > 10 and len(full_completion) > 12

    r = Renderer(tokenizer, max_length=16, max_prompt_length=10)
    prompt_ids, completion_ids = r.encode(prompt, completion)
    assert prompt_ids == full_prompt[-10:]
    assert completion_ids == full_completion[: 16 - 10]
    assert len(prompt_ids) + len(completion_ids) == 16

    # a short prompt is not cut, and the response gets the room it leaves
    r = Renderer(tokenizer, max_length=len(full_prompt) + 3, max_prompt_length=len(full_prompt))
    assert r.encode(prompt, completion) == (full_prompt, full_completion[:3])


@pytest.mark.parametrize("max_prompt_length", [0, -1])
def test_non_positive_max_prompt_length_is_rejected(tokenizer, max_prompt_length):
    with pytest.raises(DataError, match="max_prompt_length"):
        Renderer(tokenizer, max_length=8, max_prompt_length=max_prompt_length)


def test_truncation_never_empties_a_response(tokenizer):
    # max_prompt_length < max_length leaves at least one response token: no row loses a response, but pairs
    # whose one remaining token is the same on both sides are identical and dropped (counted in the report)
    path = str(DATA / "reviews_pairs_train.jsonl")
    dm = make_dm(tokenizer, path, max_rows=4, max_length=8, max_prompt_length=7)
    dm.setup("fit")
    train = dm.datasets["train"]
    kept = [
        s for s in read_jsonl(path, 4) if ids(tokenizer, s["chosen"])[:1] != ids(tokenizer, s["rejected"])[:1]
    ]
    assert 0 < len(kept) < 4 and len(train) == len(kept)
    assert dm.reports["train"]["identical_pair"] == 4 - len(kept)
    assert dm.reports["train"].get("empty_response", 0) == 0
    for row, src in zip(train, kept):
        assert row["prompt_ids"] == tokenizer(src["prompt"])["input_ids"][-7:]
        assert row["chosen_ids"] == ids(tokenizer, src["chosen"])[:1]
        assert row["rejected_ids"] == ids(tokenizer, src["rejected"])[:1]


def _drop_marked(monkeypatch):
    """Make the renderer return no completion tokens for the text DROP (truncation alone never does)."""
    original = Renderer.completion_ids

    def completion_ids(self, prompt, completion):
        return [] if completion == "DROP" else original(self, prompt, completion)

    monkeypatch.setattr(Renderer, "completion_ids", completion_ids)


def test_rows_with_empty_response_are_dropped(tmp_path, tokenizer, monkeypatch):
    _drop_marked(monkeypatch)
    rows = [
        {"prompt": "A", "chosen": "Good.", "rejected": "Bad."},
        {"prompt": "B", "chosen": "DROP", "rejected": "Bad."},
        {"prompt": "C", "chosen": "Good.", "rejected": "Bad."},
        {"prompt": "D", "chosen": "Good.", "rejected": "DROP"},
        {"prompt": "E", "chosen": "Fine.", "rejected": "Bad."},
    ]
    dm = make_dm(tokenizer, write_jsonl(tmp_path / "pairs.jsonl", rows))
    dm.setup("fit")
    train = dm.datasets["train"]
    assert train["source_row"] == [0, 2, 4]
    assert train["index"] == [0, 1, 2]
    assert [tokenizer.decode(p) for p in train["prompt_ids"]] == ["A", "C", "E"]

    demos = [{"prompt": "A", "response": "DROP"}, {"prompt": "B", "response": "Good."}]
    dm = make_dm(tokenizer, write_jsonl(tmp_path / "demos.jsonl", demos), batch_size=1)
    dm.setup("fit")
    assert dm.datasets["train"]["source_row"] == [1]

    path = write_jsonl(tmp_path / "all.jsonl", [{"prompt": "A", "response": "DROP"}])
    with pytest.raises(
        DataError,
        match=re.escape(path) + r"\): 1 rows, kept 0 .*dropped 1 \(empty response .*data.max_length",
    ):
        make_dm(tokenizer, path).setup("fit")


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


PAIR = {"prompt": "Review the lamp.", "chosen": "Good lamp.", "rejected": "Bad lamp."}


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


def _holdout(tokenizer, seed, val_fraction=0.25):
    dm = make_dm(
        tokenizer, str(DATA / "reviews_pairs_train.jsonl"), max_rows=20, val_fraction=val_fraction, seed=seed
    )
    dm.setup("fit")
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


# -- (f) resumable loading ----------------------------------------------------------------------------------
def order(seed, epoch, n=10, shuffle=True):
    sampler = EpochShuffleSampler(n, seed, shuffle)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_epoch_shuffle_sampler_orders():
    assert order(3, 0) == order(3, 0)
    assert order(3, 1) == order(3, 1)
    assert sorted(order(3, 0)) == list(range(10))
    assert order(3, 0) != order(3, 1)
    assert order(3, 0) != order(4, 0)
    assert order(3, 0, shuffle=False) == order(3, 5, shuffle=False) == list(range(10))


def loader(epoch=0, seed=7):
    sampler = EpochShuffleSampler(10, seed)
    sampler.set_epoch(epoch)
    return ResumableDataLoader(list(range(10)), batch_size=3, sampler=sampler, drop_last=True)


def test_resumable_loader_yields_the_remaining_batches():
    full = [b.tolist() for b in loader(epoch=2)]
    assert len(full) == 3  # 10 rows, 3 per batch, last partial batch dropped
    assert [i for b in full for i in b] == order(7, 2)[:9]

    resumed = loader(epoch=0)  # the state sets the epoch
    resumed.load_state_dict({"epoch": 2, "batches": 1})
    assert [b.tolist() for b in resumed] == full[1:]
    assert resumed.state_dict() == {"epoch": 2, "batches": 3}
    # the skip applies once: the next pass over the same epoch is whole again
    assert [b.tolist() for b in resumed] == full


def test_resumable_loader_state_mid_epoch_round_trip():
    first = loader(epoch=1)
    it = iter(first)
    seen = [next(it).tolist(), next(it).tolist()]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 2}
    rest = [b.tolist() for b in it]

    resumed = loader()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == rest
    assert seen + rest == [b.tolist() for b in loader(epoch=1)]


def test_datamodule_train_loader_is_resumable(tokenizer):
    dm = make_dm(
        tokenizer, str(DATA / "reviews_pairs_val.jsonl"), max_rows=8, batch_size=2, shuffle=True, seed=3
    )
    dm.setup("fit")
    indices = [b["index"].tolist() for b in dm.train_dataloader()]
    assert len(indices) == 4 and sorted(i for b in indices for i in b) == list(range(8))
    assert indices != [[0, 1], [2, 3], [4, 5], [6, 7]]
    resumed = dm.train_dataloader()
    resumed.load_state_dict({"epoch": 0, "batches": 3})
    assert [b["index"].tolist() for b in resumed] == indices[3:]
