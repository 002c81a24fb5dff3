"""The public formats users bring, read by the same code paths a hub dataset takes:

- a local copy of a hub dataset (parquet shards under data/, a README.md card naming the splits),
- whole conversations in chosen/rejected with the prompt implicit (the messages both start with),
- Anthropic HH-style strings ("\\n\\nHuman: ...\\n\\nAssistant: ..."),
- UltraFeedback-style rows (a prompt column beside whole conversations).

The real_model tests render each with SmolLM2's chat template and compare with token ids built by hand from the
template's pieces (special tokens by id, the text between them tokenized alone).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from lit_pref.data.datamodule import encode_example
from lit_pref.data.render import Renderer
from lit_pref.data.schema import check_columns, resolve_columns, validate_row
from lit_pref.data.sources import load_source
from lit_pref.errors import DataError
from tests.conftest import DATA, needs_wheel, write_jsonl
from tests.data.common import make_dm

HUB_COPY = DATA / "reviews_ultrafeedback"
Q1, A1, Q2 = "Review the lamp.", "Which lamp?", "The red one."
GOOD, BAD = "It is lovely.", "It is ugly."


def hh(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def messages(*turns: str) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


# One two-turn pair in each public format; all must become the same example.
EXPLICIT = {
    "prompt": messages(Q1, A1, Q2),
    "chosen": [{"role": "assistant", "content": GOOD}],
    "rejected": [{"role": "assistant", "content": BAD}],
}
FORMATS = {
    "implicit_prompt": {"chosen": messages(Q1, A1, Q2, GOOD), "rejected": messages(Q1, A1, Q2, BAD)},
    "hh": {"chosen": hh(Q1, A1, Q2, GOOD), "rejected": hh(Q1, A1, Q2, BAD)},
    "ultrafeedback": {
        "prompt": Q2,
        "chosen": messages(Q1, A1, Q2, GOOD),
        "rejected": messages(Q1, A1, Q2, BAD),
    },
    "ultrafeedback_messages_prompt": {
        "prompt": messages(Q1, A1, Q2),
        "chosen": messages(Q1, A1, Q2, GOOD),
        "rejected": messages(Q1, A1, Q2, BAD),
    },
}


def example(row: dict, source: str = "rows.jsonl", index: int = 0):
    mapping = check_columns("pairwise", resolve_columns(None), set(row), source)
    return validate_row(row, "pairwise", mapping, source, index)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_public_format_becomes_the_explicit_example(name):
    got = example(FORMATS[name])
    assert (got.prompt, got.chosen, got.rejected) == (
        EXPLICIT["prompt"],
        EXPLICIT["chosen"],
        EXPLICIT["rejected"],
    )


def test_hh_strings_parse_into_turns_and_a_trailing_empty_assistant_turn_is_the_generation_prompt():
    from lit_pref.data.schema import hh_messages

    assert hh_messages("\n\nHuman: Hi  \n\nAssistant: Hello!\n\nHuman: Why?\n\nAssistant:") == messages(
        "Hi", "Hello!", "Why?"
    )
    assert hh_messages("Human: q\n\nAssistant: a") == messages("q", "a")
    assert hh_messages("The lamp is fine.") is None
    assert hh_messages("Human: a reply that only starts like HH") is None
    assert hh_messages("\n\nAssistant: an answer first") is None


@pytest.mark.parametrize(
    ("row", "column", "problem"),
    [
        (
            {"chosen": hh("Review the lamp.", GOOD), "rejected": hh("Review the mug.", BAD)},
            "chosen",
            "chosen and rejected do not share one prompt: they differ from their first message, and chosen continues "
            "with roles ['user', 'assistant'] where only assistant replies may follow",
        ),
        (
            {"chosen": messages(Q1, A1, Q2, GOOD), "rejected": messages(Q1, "Pardon?", Q2, BAD)},
            "chosen",
            "chosen and rejected do not share one prompt: they first differ at message 1, and chosen continues "
            "with roles ['assistant', 'user', 'assistant'] where only assistant replies may follow",
        ),
        (
            {"chosen": messages(Q1, GOOD), "rejected": messages(Q1)},
            "rejected",
            "chosen and rejected do not share one prompt: they first differ at message 1, and rejected continues "
            "with roles [] where only assistant replies may follow",
        ),
        (
            {"prompt": "Review the mug.", "chosen": messages(Q1, GOOD), "rejected": messages(Q1, BAD)},
            "prompt",
            "the prompt 'Review the mug.' is not the prompt chosen and rejected start with ('Review the lamp.')",
        ),
    ],
    ids=["hh_different_prompts", "different_later_turn", "no_reply", "ultrafeedback_prompt_mismatch"],
)
def test_malformed_rows_name_file_row_and_column(tmp_path, tokenizer, row, column, problem):
    good = FORMATS["implicit_prompt"]
    path = write_jsonl(tmp_path / "pairs.jsonl", [good, good, row])
    with pytest.raises(DataError, match="^" + re.escape(f"{path}, row 2, column '{column}': {problem}. ")):
        make_dm(tokenizer, path).setup("fit")


def test_local_copy_of_a_hub_dataset_loads_like_hub_and_matches_the_jsonl_rows(tokenizer):
    """configs/data/reviews_ultrafeedback (UltraFeedback-binarized layout, two train shards) holds the first 96
    review pairs of reviews_pairs_train.jsonl as whole conversations: the same token ids as the JSONL rows with
    text_as_chat, and the same rows whether named as a folder or as hub:<folder>."""
    folder = str(HUB_COPY)
    as_hub = load_source(f"hub:{folder}", "train_prefs")
    assert as_hub.to_list() == load_source(folder, "train_prefs").to_list() and len(as_hub) == 96
    hub = make_dm(tokenizer, folder, val=folder, train_split="train_prefs", val_split="test_prefs")
    hub.setup("fit")
    assert (hub.reports["train"]["rows"], hub.reports["val"]["rows"]) == (96, 16)
    jsonl = make_dm(tokenizer, str(DATA / "reviews_pairs_train.jsonl"), max_rows=96, text_as_chat=True)
    jsonl.setup("fit")
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert hub.datasets["train"][column] == jsonl.datasets["train"][column]


def test_a_split_the_local_copy_lacks_is_named(tokenizer):
    message = f"{HUB_COPY}: Unknown split \"train\". Should be one of ['train_prefs', 'test_prefs']. Pick an "
    with pytest.raises(DataError, match="^" + re.escape(message + "existing split with data.train_split")):
        make_dm(tokenizer, str(HUB_COPY)).setup("fit")


# -- SmolLM2's chat template, on token ids built by hand ------------------------------------------------------
SMOLLM2_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def hand_built(tok, turns: list[tuple[str, str]]) -> tuple[list[int], Callable[[str], list[int]]]:
    """A prompt's ids as SmolLM2's template writes it ("<|im_start|>{role}, newline, {content}<|im_end|>, newline"
    per turn, then "<|im_start|>assistant", newline), special tokens by id and the text between them tokenized on
    its own; and a function giving a reply's ids ("{reply}<|im_end|>", newline)."""
    start, end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    text = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    ids = []
    for role, content in turns:
        ids += [start, *text(f"{role}\n{content}"), end, *text("\n")]
    return ids + [start, *text("assistant\n")], lambda reply: [*text(reply), end, *text("\n")]


@pytest.mark.real_model
@needs_wheel
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_smollm2_renders_each_public_format_to_hand_built_ids(smollm2_path, name):
    from lit_pref.models.loading import load_tokenizer

    tok = load_tokenizer(smollm2_path)
    encoded = encode_example(Renderer(tok, 256, 128), example(FORMATS[name]), "pairwise")
    prompt, reply = hand_built(
        tok, [("system", SMOLLM2_SYSTEM), ("user", Q1), ("assistant", A1), ("user", Q2)]
    )
    assert encoded["prompt_ids"] == prompt and len(prompt) > 40
    assert encoded["chosen_ids"] == reply(GOOD) and encoded["rejected_ids"] == reply(BAD)
