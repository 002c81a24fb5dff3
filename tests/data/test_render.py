"""Chat-template rendering and truncation of prompts and completions."""

import re

import pytest

from lit_pref.data.render import Renderer
from lit_pref.errors import DataError
from tests.conftest import DATA, write_jsonl
from tests.data.common import ANSWER, RENDERED_PROMPT, SYSTEM, USER, ids, make_dm, read_jsonl


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
