"""Row formats as one table, column mapping and validation.

A row becomes an `Example` whose text fields are either plain strings or conversational message lists
(`[{"role": ..., "content": ...}, ...]`). Every problem is reported with the source, row index and column.

Each row format is one `RowFormatSpec` entry of `FORMATS`: the fields it requires and may have, how `format:
auto` recognizes it, its validator (raw row -> Example), its encoder (Example -> token-id columns) and how the
collator lays its token ids out. Adding a format is adding one entry (docs/data.md#adding-a-row-format).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from lit_pref.data.checks import (
    Text,
    check_number,
    check_roles,
    check_same_prompt,
    check_text,
    checked_text,
    conversation,
    split_implicit_prompt,
)
from lit_pref.data.checks import hh_messages as hh_messages  # re-exported: its public home was here
from lit_pref.errors import DataError, row_error

if TYPE_CHECKING:
    from lit_pref.data.render import Renderer

RowFormat = Literal["pairwise", "demonstration", "outcome", "prompt"]
FormatOption = Literal["auto", "pairwise", "demonstration", "outcome", "prompt"]

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
# Why an encoder drops a row after tokenization (its third result), as counted in the per-split report.
DROP_REASONS = {
    "empty_response": "empty response after truncation",
    "identical_pair": "chosen == rejected after tokenization and truncation",
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


#: validator(row, mapping field -> column, source, row index) -> Example
Validator = Callable[[dict[str, Any], dict[str, str], str, int], Example]
#: encoder(renderer, example, truncated prompt ids) -> (token-id and value columns, whether each completion was
#: cut, drop reason: "" to keep the row, else a key of DROP_REASONS)
Encoder = Callable[["Renderer", Example, list[int]], tuple[dict[str, Any], list[bool], str]]


@dataclass(frozen=True)
class RowFormatSpec:
    """One row format: its fields, how it is recognized, validated, encoded and collated.

    Attributes:
        summary: How error messages list it, e.g. "pairwise (prompt, chosen, rejected)".
        required: Fields every row has (each mapped to a column by `data.columns`).
        optional: Fields a row may have.
        detect_by: Fields whose columns make `format: auto` pick this format; formats are tried in table order.
        validate: Raw row -> Example (see `Validator`).
        encode: Example -> encoded columns (see `Encoder`); `prompt_ids` and the truncation flags are added for it.
        fallbacks: field -> a column read when the field's own column is absent (outcome: `text` for response).
        hint: The Example field that tells the renderer whether the row is conversational with its prompt.
        completions: Encoded id columns laid out after the prompt, one sequence each, in batch order (pairwise:
            B chosen rows, then B rejected rows). The batch also carries them as unpadded lists.
        extras: Encoded id columns a row may have (outcome: a base-model `sample_ids`), concatenated after the
            completions when present; such a batch carries the padded sequences only.
        count_key: The batch key holding B, the rows, when a batch holds several sequences per row.
        numbers: Encoded float columns the batch carries as tensors (when the data has them).
        generation: The batch carries left-padded prompts to generate from (prompt rows).
    """

    summary: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    detect_by: tuple[str, ...]
    validate: Validator
    encode: Encoder
    fallbacks: Mapping[str, str] = field(default_factory=dict)
    hint: str = "response"
    completions: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    count_key: str | None = None
    numbers: tuple[str, ...] = ()
    generation: bool = False


# -- validators: raw row -> Example ------------------------------------------------------------------------------
def _validate_pairwise(row: dict[str, Any], mapping: dict[str, str], source: str, index: int) -> Example:
    prompt_col = mapping.get("prompt")
    columns = (mapping["chosen"], mapping["rejected"])
    chosen, rejected = (conversation(check_text(row[c], source, index, c)) for c in columns)
    given = None if prompt_col is None or row.get(prompt_col) is None else row[prompt_col]
    whole = all(isinstance(t, list) and t[0]["role"] != "assistant" for t in (chosen, rejected))
    if given is None or whole:
        # no prompt, or whole conversations (HH strings, UltraFeedback lists): the shared start is the prompt
        prompt, chosen, rejected = split_implicit_prompt(chosen, rejected, source, index, columns)
        if given is not None:
            check_same_prompt(check_text(given, source, index, prompt_col), prompt, source, index, prompt_col)
        prompt_col = mapping["chosen"]
    else:
        prompt = check_text(given, source, index, prompt_col)
    check_roles(prompt, source, index, prompt_col, prompt=True)
    check_roles(chosen, source, index, mapping["chosen"], prompt=False)
    check_roles(rejected, source, index, mapping["rejected"], prompt=False)
    return Example(prompt=prompt, chosen=chosen, rejected=rejected)


def _validate_demonstration(row: dict[str, Any], mapping: dict[str, str], source: str, index: int) -> Example:
    prompt = checked_text(row, mapping["prompt"], source, index, prompt=True)
    return Example(
        prompt=prompt, response=checked_text(row, mapping["response"], source, index, prompt=False)
    )


def _validate_outcome(row: dict[str, Any], mapping: dict[str, str], source: str, index: int) -> Example:
    prompt_col = mapping.get("prompt")
    prompt = "" if prompt_col is None or row.get(prompt_col) is None else row[prompt_col]
    example = Example(
        prompt=check_text(prompt, source, index, prompt_col or "prompt", allow_empty=True),
        response=check_text(row[mapping["response"]], source, index, mapping["response"]),
        outcome=check_number(row[mapping["outcome"]], source, index, mapping["outcome"]),
    )
    check_roles(example.prompt, source, index, prompt_col or "prompt", prompt=True)
    check_roles(example.response, source, index, mapping["response"], prompt=False)
    if "propensity" in mapping:
        propensity = check_number(row[mapping["propensity"]], source, index, mapping["propensity"])
        if not 0 < propensity <= 1:
            raise row_error(
                source,
                index,
                mapping["propensity"],
                f"propensity {propensity} is outside (0, 1]",
                "Propensities are assignment probabilities: fix the value",
            )
        example.propensity = propensity
    for name in ("prediction", "sample_logp", "sample_prediction"):
        if name in mapping:
            setattr(example, name, check_number(row[mapping[name]], source, index, mapping[name]))
    if example.sample_logp is not None and example.sample_logp > 0:
        raise row_error(
            source,
            index,
            mapping["sample_logp"],
            f"log-prob {example.sample_logp} is positive",
            "It must be the base model's log-probability of the sample (<= 0): fix the value",
        )
    if "sample" in mapping:
        example.sample = checked_text(row, mapping["sample"], source, index, prompt=False)
    return example


def _validate_prompt(row: dict[str, Any], mapping: dict[str, str], source: str, index: int) -> Example:
    preference = row.get(mapping["preference"]) if "preference" in mapping else None
    if preference is not None and not isinstance(preference, str):
        raise row_error(
            source,
            index,
            mapping["preference"],
            f"expected a string, got {preference!r:.60}",
            "Fix the value",
        )
    return Example(
        prompt=checked_text(row, mapping["prompt"], source, index, prompt=True), preference=preference
    )


# -- encoders: Example -> token-id columns -----------------------------------------------------------------------
def _encode_pairwise(renderer: Renderer, example: Example, prompt_ids: list[int]):
    chosen, cut_chosen = renderer.fit_completion(prompt_ids, example.prompt, example.chosen)
    rejected, cut_rejected = renderer.fit_completion(prompt_ids, example.prompt, example.rejected)
    drop = "empty_response" if not (chosen and rejected) else "identical_pair" if chosen == rejected else ""
    return {"chosen_ids": chosen, "rejected_ids": rejected}, [cut_chosen, cut_rejected], drop


def _encode_demonstration(renderer: Renderer, example: Example, prompt_ids: list[int]):
    response, cut = renderer.fit_completion(prompt_ids, example.prompt, example.response)
    return {"response_ids": response}, [cut], "" if response else "empty_response"


def _encode_outcome(renderer: Renderer, example: Example, prompt_ids: list[int]):
    out, cuts, drop = _encode_demonstration(renderer, example, prompt_ids)
    out.update({name: getattr(example, name) for name in OUTCOME_NUMBERS})
    if example.sample is not None:
        out["sample_ids"], cut = renderer.fit_completion(prompt_ids, example.prompt, example.sample)
        cuts.append(cut)
        drop = drop or ("" if out["sample_ids"] else "empty_response")
    return out, cuts, drop


def _encode_prompt(renderer: Renderer, example: Example, prompt_ids: list[int]):
    return {"prompt_text": json.dumps(example.prompt), "preference": example.preference}, [], ""


#: every row format, in the order `format: auto` tries them
FORMATS: dict[str, RowFormatSpec] = {
    "pairwise": RowFormatSpec(
        summary="pairwise (prompt, chosen, rejected)",
        required=("chosen", "rejected"),
        optional=("prompt",),
        detect_by=("chosen", "rejected"),
        validate=_validate_pairwise,
        encode=_encode_pairwise,
        hint="chosen",
        completions=("chosen_ids", "rejected_ids"),
        count_key="num_pairs",
    ),
    "outcome": RowFormatSpec(
        summary="outcome (text or response, outcome)",
        required=("response", "outcome"),
        optional=("prompt", "propensity", "prediction", "sample", "sample_logp", "sample_prediction"),
        detect_by=("outcome",),
        validate=_validate_outcome,
        encode=_encode_outcome,
        fallbacks={"response": "text"},  # direct-outcome datasets hold a whole text with no prompt
        completions=("response_ids",),
        extras=("sample_ids",),
        count_key="num_rows",
        numbers=OUTCOME_NUMBERS,
    ),
    "demonstration": RowFormatSpec(
        summary="demonstration (prompt, response)",
        required=("prompt", "response"),
        optional=(),
        detect_by=("response",),
        validate=_validate_demonstration,
        encode=_encode_demonstration,
        completions=("response_ids",),
    ),
    "prompt": RowFormatSpec(
        summary="prompt-only (prompt)",
        required=("prompt",),
        optional=("preference",),
        detect_by=("prompt",),
        validate=_validate_prompt,
        encode=_encode_prompt,
        generation=True,
    ),
}


def resolve_columns(columns: dict[str, str] | None) -> dict[str, str]:
    unknown = set(columns or {}) - set(DEFAULT_COLUMNS)
    if unknown:
        raise DataError(
            f"data.columns has unknown field(s) {sorted(unknown)}: the fields are {sorted(DEFAULT_COLUMNS)}, "
            "each mapped to a column name of your data"
        )
    return {**DEFAULT_COLUMNS, **(columns or {})}


def detect_format(available: set[str], columns: dict[str, str], source: str) -> RowFormat:
    """Pick the row format from the columns a source has: the first of FORMATS whose `detect_by` columns it has."""
    for name, spec in FORMATS.items():
        if all(columns[f] in available for f in spec.detect_by):
            return name
    expected = [spec.summary for spec in FORMATS.values()]
    raise DataError(
        f"{source}: cannot tell the row format from its columns {sorted(available)}. Expected "
        f"{', '.join(expected[:-1])} or {expected[-1]}. Set data.format, and data.columns if your column names "
        "differ."
    )


def field_column(field: str, fmt: RowFormat, columns: dict[str, str], available: set[str]) -> str:
    """The column holding `field` in rows of `fmt`: its mapped column, else the format's fallback if present."""
    name = columns[field]
    fallback = FORMATS[fmt].fallbacks.get(field)
    return fallback if name not in available and fallback in available else name


def check_columns(
    fmt: RowFormat, columns: dict[str, str], available: set[str], source: str
) -> dict[str, str]:
    """Map each field the format uses to the column that holds it; raise if a required one is missing."""
    spec = FORMATS[fmt]
    mapping = {}
    for name in spec.required:
        column = field_column(name, fmt, columns, available)
        if column not in available:
            raise DataError(
                f"{source}: the {fmt} format needs a column '{column}' (field '{name}') but the columns are "
                f"{sorted(available)}. Rename the column or map it with data.columns: {{{name}: <your column>}}."
            )
        mapping[name] = column
    for name in spec.optional:
        column = field_column(name, fmt, columns, available)
        if column in available:
            mapping[name] = column
    return mapping


def validate_row(
    row: dict[str, Any], fmt: RowFormat, mapping: dict[str, str], source: str, index: int
) -> Example:
    """Check one raw row against its format and return it as an Example."""
    return FORMATS[fmt].validate(row, mapping, source, index)


def required_columns(fmt: str, columns: dict[str, str]) -> list[str]:
    """The column names (after `data.columns`) a format's required fields are read from, as errors list them."""
    return [columns[f] for f in FORMATS[fmt].required]
