"""Validated rows -> token ids: one row's encoding, and what encoded rows count (report, lengths, tokens)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from lit_pref.data.render import Renderer
from lit_pref.data.schema import DROP_REASONS, FORMATS, Example, RowFormat

# Bump when the encoding of rows into token ids (or the set of rows kept) changes, so cached log-probs keyed on
# it are not reused. 2: identical pairs are dropped. 3: HH strings are parsed into turns.
ENCODING_VERSION = 3
# Encoded id columns that follow a prompt (every format's completions, then their extras).
COMPLETION_COLUMNS = tuple(dict.fromkeys(c for spec in FORMATS.values() for c in spec.completions))
EXTRA_COLUMNS = tuple(dict.fromkeys(c for spec in FORMATS.values() for c in spec.extras))


def encode_example(renderer: Renderer, example: Example, fmt: RowFormat) -> dict[str, Any]:
    """Token ids of one validated row, whether its prompt / a response was truncated, and why it is dropped
    ("" when kept; else a key of DROP_REASONS). The format's encoder (FORMATS[fmt].encode) adds its columns."""
    spec = FORMATS[fmt]
    full_prompt = renderer.full_prompt_ids(example.prompt, getattr(example, spec.hint))
    out: dict[str, Any] = {"prompt_ids": full_prompt[-renderer.max_prompt_length :], "drop": ""}
    out["prompt_truncated"] = len(full_prompt) > renderer.max_prompt_length
    columns, cuts, out["drop"] = spec.encode(renderer, example, out["prompt_ids"])
    out.update(columns)
    out["response_truncated"] = any(cuts)
    return out


def split_report(name: str, specs: list[str], counts: Counter) -> str:
    """One line: kept / truncated / dropped (by reason) rows of a split."""
    dropped = sum(counts[r] for r in DROP_REASONS)
    reasons = ", ".join(f"{text}: {counts[r]}" for r, text in DROP_REASONS.items() if counts[r])
    return (
        f"lit_pref: data.{name} ({', '.join(specs)}): {counts['rows']} rows, kept {counts['kept']} "
        f"(truncated: {counts['truncated_prompts']} prompts, {counts['truncated_responses']} rows' responses), "
        f"dropped {dropped}" + (f" ({reasons})" if reasons else "")
    )


def row_lengths(dataset) -> list[int]:
    """Tokens of each row's longest sequence (prompt + the longer completion): what its batch is padded to."""
    prompts = [len(p) for p in dataset["prompt_ids"]]
    completions = [[0] * len(prompts)]
    for column in COMPLETION_COLUMNS:
        if column in dataset.column_names:
            completions.append([len(c) for c in dataset[column]])
    return [p + max(c) for p, *c in zip(prompts, *completions)]


def row_tokens(dataset) -> list[int]:
    """Real tokens of each row as the collator lays it out: pairs count prompt + chosen + prompt + rejected,
    outcome rows with a base-model sample prompt + response + prompt + sample, demonstrations prompt + response,
    prompt rows (online methods) the prompt only (their responses do not exist yet)."""
    prompts = [len(p) for p in dataset["prompt_ids"]]
    columns = [c for c in COMPLETION_COLUMNS + EXTRA_COLUMNS if c in dataset.column_names]
    if not columns:
        return prompts
    totals = [0] * len(prompts)
    for column in columns:
        for i, ids in enumerate(dataset[column]):
            if ids is not None:
                totals[i] += prompts[i] + len(ids)
    return totals
