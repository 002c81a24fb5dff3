"""Checks of single values of a row (texts, message roles, numbers) and the parsing of whole conversations.

They know nothing about row formats: the per-format validators of `lit_pref.data.schema` combine them. Every
problem is reported with the source, row index and column (`lit_pref.errors.row_error`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from lit_pref.errors import row_error

Text = str | list[dict[str, str]]
# Roles a chat template knows. A prompt ends with a user turn (generation answers it); a completion is assistant
# turns only.
PROMPT_ROLES = ("system", "user", "assistant")
COMPLETION_ROLES = ("assistant",)


def check_text(value: Any, source: str, row: int, column: str, allow_empty: bool = False) -> Text:
    """A plain string or a list of {role, content} messages (copied to exactly those two keys)."""
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


def check_roles(text: Text, source: str, row: int, column: str, prompt: bool) -> Text:
    """A message-list prompt uses known roles and ends with a user turn; a completion holds assistant turns only."""
    if not isinstance(text, list):
        return text
    allowed = PROMPT_ROLES if prompt else COMPLETION_ROLES
    kind = "prompt" if prompt else "completion"
    for i, message in enumerate(text):
        if message["role"] not in allowed:
            problem = f"message {i} has role {message['role']!r}; a {kind} may use only {list(allowed)}"
            raise row_error(
                source, row, column, problem, "Fix the role, or move the message to the right column"
            )
    if prompt and text[-1]["role"] != "user":
        raise row_error(
            source,
            row,
            column,
            f"the prompt ends with a {text[-1]['role']!r} message, not a 'user' one",
            "End the prompt with the user turn the completion answers; move assistant replies to the completion",
        )
    return text


def checked_text(row: dict[str, Any], column: str, source: str, index: int, prompt: bool) -> Text:
    """The text in `column` of a row, checked as a text and for its roles (a prompt's or a completion's)."""
    return check_roles(check_text(row[column], source, index, column), source, index, column, prompt)


def check_number(value: Any, source: str, row: int, column: str) -> float:
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


def conversation(text: Text) -> Text:
    """A whole conversation as messages: HH-style strings parsed, message lists and other strings unchanged."""
    return (hh_messages(text) or text) if isinstance(text, str) else text


def split_implicit_prompt(
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
                source,
                row,
                column,
                f"chosen and rejected do not share one prompt: they {first}, and {column} continues with roles "
                f"{[m['role'] for m in rest]} where only assistant replies may follow",
                "Make both conversations start with the same prompt messages, or give an explicit prompt column",
            )
    return chosen[:shared], chosen[shared:], rejected[shared:]


def check_same_prompt(given: Text, shared: list[dict[str, str]], source: str, row: int, column: str) -> None:
    """A prompt column beside whole conversations (UltraFeedback): it must be the conversations' prompt, as the
    same messages or as the text of the last user turn."""
    given = conversation(given)
    if given != shared and given != shared[-1]["content"]:
        raise row_error(
            source,
            row,
            column,
            f"the prompt {given!r:.80} is not the prompt chosen and rejected start with "
            f"({shared[-1]['content']!r:.80})",
            "Fix the prompt, or drop the prompt column and let the shared leading messages be the prompt",
        )
