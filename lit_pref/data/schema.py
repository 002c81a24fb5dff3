"""Row formats, column mapping and validation.

A row becomes an `Example` whose text fields are either plain strings or conversational message lists
(`[{"role": ..., "content": ...}, ...]`). Every problem is reported with the source, row index and column.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from lit_pref.errors import DataError, row_error

RowFormat = Literal["pairwise", "demonstration", "outcome", "prompt"]
FormatOption = Literal["auto", "pairwise", "demonstration", "outcome", "prompt"]
Text = str | list[dict[str, str]]

DEFAULT_COLUMNS = {
    "prompt": "prompt",
    "chosen": "chosen",
    "rejected": "rejected",
    "response": "response",
    "outcome": "outcome",
    "propensity": "propensity",
    "preference": "preference",
    # Direct-outcome extras (CausalPO): the outcome model's prediction g_hat(x) for the row's text, and a text
    # sampled from the base model f0 for the same prompt with its f0 log-prob and g_hat prediction.
    "prediction": "prediction",
    "sample": "sample",
    "sample_logp": "sample_logp",
    "sample_prediction": "sample_prediction",
}
# Numeric fields of outcome rows, as they travel from validation to batches.
OUTCOME_NUMBERS = ("outcome", "propensity", "prediction", "sample_logp", "sample_prediction")
# Roles a chat template knows. A prompt ends with a user turn (generation answers it); a completion is assistant
# turns only.
PROMPT_ROLES = ("system", "user", "assistant")
COMPLETION_ROLES = ("assistant",)
# The outcome format also accepts a `text` column (a whole text with no prompt), as direct-outcome datasets do.
TEXT_FALLBACK = "text"

REQUIRED = {
    "pairwise": ("chosen", "rejected"),
    "demonstration": ("prompt", "response"),
    "outcome": ("response", "outcome"),
    "prompt": ("prompt",),
}
OPTIONAL = {
    "pairwise": ("prompt",),
    "demonstration": (),
    "outcome": ("prompt", "propensity", "prediction", "sample", "sample_logp", "sample_prediction"),
    "prompt": ("preference",),
}


@dataclass
class Example:
    """One validated row. `prompt` is "" when the row has none (outcome texts)."""

    prompt: Text
    chosen: Text | None = None
    rejected: Text | None = None
    response: Text | None = None
    outcome: float | None = None
    propensity: float | None = None
    prediction: float | None = None
    sample: Text | None = None
    sample_logp: float | None = None
    sample_prediction: float | None = None
    preference: str | None = None


def resolve_columns(columns: dict[str, str] | None) -> dict[str, str]:
    unknown = set(columns or {}) - set(DEFAULT_COLUMNS)
    if unknown:
        raise DataError(
            f"data.columns has unknown field(s) {sorted(unknown)}: the fields are {sorted(DEFAULT_COLUMNS)}, "
            "each mapped to a column name of your data"
        )
    return {**DEFAULT_COLUMNS, **(columns or {})}


def detect_format(available: set[str], columns: dict[str, str], source: str) -> RowFormat:
    """Pick the row format from the columns a source has."""
    if columns["chosen"] in available and columns["rejected"] in available:
        return "pairwise"
    if columns["outcome"] in available:
        return "outcome"
    if columns["response"] in available:
        return "demonstration"
    if columns["prompt"] in available:
        return "prompt"
    raise DataError(
        f"{source}: cannot tell the row format from its columns {sorted(available)}. Expected pairwise "
        "(prompt, chosen, rejected), demonstration (prompt, response), outcome (text or response, outcome) "
        "or prompt-only (prompt). Set data.format, and data.columns if your column names differ."
    )


def field_column(field: str, fmt: RowFormat, columns: dict[str, str], available: set[str]) -> str:
    name = columns[field]
    if field == "response" and fmt == "outcome" and name not in available and TEXT_FALLBACK in available:
        return TEXT_FALLBACK
    return name


def check_columns(
    fmt: RowFormat, columns: dict[str, str], available: set[str], source: str
) -> dict[str, str]:
    """Map each field the format uses to the column that holds it; raise if a required one is missing."""
    mapping = {}
    for field in REQUIRED[fmt]:
        name = field_column(field, fmt, columns, available)
        if name not in available:
            raise DataError(
                f"{source}: the {fmt} format needs a column '{name}' (field '{field}') but the columns are "
                f"{sorted(available)}. Rename the column or map it with data.columns: {{{field}: <your column>}}."
            )
        mapping[field] = name
    for field in OPTIONAL[fmt]:
        name = field_column(field, fmt, columns, available)
        if name in available:
            mapping[field] = name
    return mapping


def _check_text(value: Any, source: str, row: int, column: str, allow_empty: bool = False) -> Text:
    if isinstance(value, str):
        if not value and not allow_empty:
            raise row_error(source, row, column, "the text is empty", "Remove the row or fill the column")
        return value
    if isinstance(value, list) and value:
        for i, message in enumerate(value):
            if (
                not isinstance(message, dict)
                or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)
            ):
                raise row_error(
                    source,
                    row,
                    column,
                    f"message {i} is {message!r}, not a {{'role': str, 'content': str}} dict",
                    "Give a string or a list of {role, content} messages",
                )
        return [{"role": m["role"], "content": m["content"]} for m in value]
    if value is None:
        raise row_error(
            source, row, column, "the value is missing (null)", "Fill the column or remove the row"
        )
    raise row_error(
        source,
        row,
        column,
        f"expected a string or a list of {{role, content}} messages, got {type(value).__name__} {value!r:.60}",
        "Fix the value's type",
    )


def _check_roles(text: Text, source: str, row: int, column: str, prompt: bool) -> Text:
    """A message-list prompt uses known roles and ends with a user turn; a completion holds assistant turns only."""
    if not isinstance(text, list):
        return text
    allowed = PROMPT_ROLES if prompt else COMPLETION_ROLES
    for i, message in enumerate(text):
        if message["role"] not in allowed:
            raise row_error(
                source, row, column, f"message {i} has role {message['role']!r}; a "
                f"{'prompt' if prompt else 'completion'} may use only {list(allowed)}",
                "Fix the role, or move the message to the right column",
            )  # fmt: skip
    if prompt and text[-1]["role"] != "user":
        raise row_error(
            source, row, column, f"the prompt ends with a {text[-1]['role']!r} message, not a 'user' one",
            "End the prompt with the user turn the completion answers; move assistant replies to the completion",
        )  # fmt: skip
    return text


def _check_number(value: Any, source: str, row: int, column: str) -> float:
    if value is None:  # CSV readers turn NaN into null
        raise row_error(
            source, row, column, "the number is missing (null or NaN)", "Fill the value or drop the row"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise row_error(
            source,
            row,
            column,
            f"expected a number, got {type(value).__name__} {value!r:.60}",
            "Fix the value",
        )
    if not math.isfinite(value):
        raise row_error(
            source, row, column, f"the number is {value}", "Outcomes must be finite: fix or drop the row"
        )
    return float(value)


# Anthropic HH-RLHF writes a whole conversation as one string: "\n\nHuman: ...\n\nAssistant: ...".
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def hh_messages(text: str) -> list[dict[str, str]] | None:
    """The messages of an HH-style string (a trailing empty "Assistant:" turn dropped), or None if it is not one."""
    parts = HH_TURN.split(text)
    if len(parts) < 5 or parts[0].strip() or parts[1] != "Human" or "Assistant" not in parts[3::2]:
        return None  # an HH conversation starts with a Human turn and has an Assistant one
    messages = [{"role": HH_ROLES[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2])]
    if messages[-1] == {"role": "assistant", "content": ""}:
        messages.pop()
    return messages


def _conversation(text: Text) -> Text:
    """A whole conversation as messages: HH-style strings parsed, message lists and other strings unchanged."""
    return (hh_messages(text) or text) if isinstance(text, str) else text


def _split_implicit_prompt(
    chosen: Text, rejected: Text, source: str, row: int, columns: tuple[str, str]
) -> tuple[Text, Text, Text]:
    """Pairs given as whole conversations: the leading messages both share are the prompt, what follows must be
    assistant replies."""
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise row_error(
            source,
            row,
            "prompt",
            "the row has no prompt and its chosen/rejected are plain strings",
            "Add a prompt column, or give chosen/rejected as whole conversations that share their first messages",
        )
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    for column, text in zip(columns, (chosen, rejected)):
        rest = text[shared:]
        if shared == 0 or not rest or any(m["role"] != "assistant" for m in rest):
            first = f"first differ at message {shared}" if shared else "differ from their first message"
            raise row_error(
                source, row, column, f"chosen and rejected do not share one prompt: they {first}, and {column} "
                f"continues with roles {[m['role'] for m in rest]} where only assistant replies may follow",
                "Make both conversations start with the same prompt messages, or give an explicit prompt column",
            )  # fmt: skip
    return chosen[:shared], chosen[shared:], rejected[shared:]


def _check_same_prompt(given: Text, shared: list[dict[str, str]], source: str, row: int, column: str) -> None:
    """A prompt column beside whole conversations (UltraFeedback): it must be the conversations' prompt, as the
    same messages or as the text of the last user turn."""
    given = _conversation(given)
    if given != shared and given != shared[-1]["content"]:
        raise row_error(
            source, row, column, f"the prompt {given!r:.80} is not the prompt chosen and rejected start with "
            f"({shared[-1]['content']!r:.80})",
            "Fix the prompt, or drop the prompt column and let the shared leading messages be the prompt",
        )  # fmt: skip


def validate_row(
    row: dict[str, Any], fmt: RowFormat, mapping: dict[str, str], source: str, index: int
) -> Example:
    """Check one raw row against its format and return it as an Example."""
    prompt_col = mapping.get("prompt")
    if fmt == "pairwise":
        columns = (mapping["chosen"], mapping["rejected"])
        chosen, rejected = (_conversation(_check_text(row[c], source, index, c)) for c in columns)
        given = None if prompt_col is None or row.get(prompt_col) is None else row[prompt_col]
        whole = all(isinstance(t, list) and t[0]["role"] != "assistant" for t in (chosen, rejected))
        if given is None or whole:
            # no prompt, or whole conversations (HH strings, UltraFeedback lists): the shared start is the prompt
            prompt, chosen, rejected = _split_implicit_prompt(chosen, rejected, source, index, columns)
            if given is not None:
                _check_same_prompt(
                    _check_text(given, source, index, prompt_col), prompt, source, index, prompt_col
                )
            prompt_col = mapping["chosen"]
        else:
            prompt = _check_text(given, source, index, prompt_col)
        _check_roles(prompt, source, index, prompt_col, prompt=True)
        _check_roles(chosen, source, index, mapping["chosen"], prompt=False)
        _check_roles(rejected, source, index, mapping["rejected"], prompt=False)
        return Example(prompt=prompt, chosen=chosen, rejected=rejected)
    if fmt == "demonstration":
        return Example(
            prompt=_check_roles(_check_text(row[prompt_col], source, index, prompt_col), source, index, prompt_col, True),
            response=_check_roles(
                _check_text(row[mapping["response"]], source, index, mapping["response"]),
                source, index, mapping["response"], False,
            ),
        )  # fmt: skip
    if fmt == "outcome":
        prompt = "" if prompt_col is None or row.get(prompt_col) is None else row[prompt_col]
        example = Example(
            prompt=_check_text(prompt, source, index, prompt_col or "prompt", allow_empty=True),
            response=_check_text(row[mapping["response"]], source, index, mapping["response"]),
            outcome=_check_number(row[mapping["outcome"]], source, index, mapping["outcome"]),
        )
        _check_roles(example.prompt, source, index, prompt_col or "prompt", prompt=True)
        _check_roles(example.response, source, index, mapping["response"], prompt=False)
        if "propensity" in mapping:
            propensity = _check_number(row[mapping["propensity"]], source, index, mapping["propensity"])
            if not 0 < propensity <= 1:
                raise row_error(
                    source,
                    index,
                    mapping["propensity"],
                    f"propensity {propensity} is outside (0, 1]",
                    "Propensities are assignment probabilities: fix the value",
                )
            example.propensity = propensity
        for field in ("prediction", "sample_logp", "sample_prediction"):
            if field in mapping:
                setattr(example, field, _check_number(row[mapping[field]], source, index, mapping[field]))
        if example.sample_logp is not None and example.sample_logp > 0:
            raise row_error(
                source, index, mapping["sample_logp"], f"log-prob {example.sample_logp} is positive",
                "It must be the base model's log-probability of the sample (<= 0): fix the value",
            )  # fmt: skip
        if "sample" in mapping:
            example.sample = _check_text(row[mapping["sample"]], source, index, mapping["sample"])
            _check_roles(example.sample, source, index, mapping["sample"], prompt=False)
        return example
    preference = row.get(mapping["preference"]) if "preference" in mapping else None
    if preference is not None and not isinstance(preference, str):
        raise row_error(
            source,
            index,
            mapping["preference"],
            f"expected a string, got {preference!r:.60}",
            "Fix the value",
        )
    prompt = _check_roles(
        _check_text(row[prompt_col], source, index, prompt_col), source, index, prompt_col, True
    )
    return Example(prompt=prompt, preference=preference)
