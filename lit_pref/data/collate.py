"""Collation: pad, mask prompt and padding with -100, and concatenate chosen + rejected for pairwise rows."""

from __future__ import annotations

import json
from typing import Any

import torch

from lit_pref.data.schema import FORMATS
from lit_pref.models.batching import left_padded_prompts, sequences_batch


def prompt_lists(batch: dict[str, Any]) -> list[list[int]]:
    """The prompt token ids of each row of a batch, without the left padding."""
    if "prompt_ids" in batch:
        return batch["prompt_ids"]
    masks = batch["prompt_attention_mask"].bool()
    return [row[m].tolist() for row, m in zip(batch["prompt_input_ids"], masks)]


def prompt_texts(batch: dict[str, Any], tokenizer) -> list[Any]:
    """The rows' prompts as the data gave them (string or messages), else decoded from the ids."""
    if batch.get("prompt_text") is not None:
        return batch["prompt_text"]
    return tokenizer.batch_decode(batch["prompt_input_ids"], skip_special_tokens=True)


def texts_only(batch: dict[str, Any]) -> dict[str, Any]:
    """The data's own texts (rows :num_rows) of an outcome batch that also holds base-model samples."""
    n = batch["num_rows"]
    out = {k: v for k, v in batch.items() if k != "num_rows"}
    for key in ("input_ids", "attention_mask", "labels"):
        out[key] = batch[key][:n]
    return out


class Collator:
    """Builds model-ready batches for one row format, laid out as its FORMATS entry says.

    pairwise:            input_ids/attention_mask/labels of shape (2B, T): rows 0..B-1 are prompt+chosen,
                         rows B..2B-1 prompt+rejected (one forward serves both); `num_pairs` = B.
    demonstration/outcome: the same for prompt+response, shape (B, T); outcome batches add `outcome` (and
                         `propensity`, `prediction`, `sample_logp`, `sample_prediction` when the data has them).
                         Outcome rows with a base-model `sample` are concatenated like pairs: rows 0..B-1
                         prompt+text, rows B..2B-1 prompt+sample; `num_rows` = B.
    prompt:              left-padded `prompt_input_ids` / `prompt_attention_mask` ready for generation.
    Every batch also carries `index`, the rows' positions in their dataset, `split` (for cached log-probs), and
    the unpadded token-id lists of its rows, which online methods build their own sequences from: `prompt_ids`
    (one per row) and `chosen_ids` + `rejected_ids` (pairwise) or `response_ids` (demonstration, outcome).
    """

    def __init__(
        self, row_format: str, pad_id: int, pad_to_multiple_of: int | None = None, split: str = "train"
    ):
        self.row_format = row_format
        self.spec = FORMATS[row_format]
        self.split = split
        self.pad_id = pad_id
        self.multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        spec, first = self.spec, rows[0]
        prompts = [r["prompt_ids"] for r in rows]
        batch: dict[str, Any] = {
            "index": torch.tensor([r["index"] for r in rows], dtype=torch.long),
            "split": self.split,
            "prompt_ids": prompts,
        }
        extras = [c for c in spec.extras if first.get(c) is not None]
        columns = [*spec.completions, *extras]
        if columns:
            lists = {c: [r[c] for r in rows] for c in columns}
            completions = [ids for c in columns for ids in lists[c]]
            batch.update(sequences_batch(prompts * len(columns), completions, self.pad_id, self.multiple_of))
            if len(columns) > 1:
                batch[spec.count_key] = len(rows)
            if not extras:
                batch.update({c: lists[c] for c in spec.completions})
        for name in spec.numbers:
            if first.get(name) is not None:
                batch[name] = torch.tensor([r[name] for r in rows], dtype=torch.float32)
        if spec.generation or "prompt_text" in first:
            batch["prompt_input_ids"], batch["prompt_attention_mask"] = left_padded_prompts(
                prompts, self.pad_id
            )
            if "prompt_text" in first:
                batch["prompt_text"] = [json.loads(r["prompt_text"]) for r in rows]
        if first.get("preference") is not None:
            batch["preference"] = [r["preference"] for r in rows]
        return batch
