"""Model inputs from token-id lists: padding, prompt + completion sequences with labels, and chunked scoring.

Everything that turns "these prompts and these completions" into a forward pass goes through here: the data
module's collator, generation (left-padded prompts), and every "score these sequences" call of callbacks,
commands and online methods (`score_sequences`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lit_pref.models.labels import IGNORE_INDEX
from lit_pref.models.logprobs import sequence_logps


def pad_rows(rows: list[list[int]], value: int, left: bool = False, multiple_of: int | None = None) -> Tensor:
    """Rows of different lengths as one (N, T) long tensor, padded with `value` on the right (or left)."""
    width = max(len(r) for r in rows)
    if multiple_of:
        width = -(-width // multiple_of) * multiple_of
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            out[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        else:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def left_padded_prompts(prompts: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask) of prompts padded on the left, ready for generation."""
    return pad_rows(prompts, pad_id, left=True), pad_rows([[1] * len(p) for p in prompts], 0, left=True)


def sequences_batch(
    prompts: list[list[int]], completions: list[list[int]], pad_id: int, multiple_of: int | None = None
) -> dict[str, Tensor]:
    """Right-padded prompt+completion sequences with labels that score only completion tokens."""
    seqs = [p + c for p, c in zip(prompts, completions)]
    label_rows = [[IGNORE_INDEX] * len(p) + c for p, c in zip(prompts, completions)]
    return {
        "input_ids": pad_rows(seqs, pad_id, multiple_of=multiple_of),
        "attention_mask": pad_rows([[1] * len(s) for s in seqs], 0, multiple_of=multiple_of),
        "labels": pad_rows(label_rows, IGNORE_INDEX, multiple_of=multiple_of),
    }


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def map_sequences(
    fn: Callable[[dict[str, Tensor]], Tensor],
    prompts: list[list[int]],
    completions: list[list[int]],
    pad_id: int,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> Tensor:
    """fn(batch) -> (n,) over prompt+completion sequences, `batch_size` at a time; results concatenated on CPU."""
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = sequences_batch(
            prompts[start : start + batch_size], completions[start : start + batch_size], pad_id
        )
        out.append(fn({k: v.to(device) for k, v in batch.items()}).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def score_sequences(
    model: nn.Module,
    prompts: list[list[int]],
    completions: list[list[int]],
    pad_id: int,
    batch_size: int = 32,
) -> Tensor:
    """Summed log-prob l(completion | prompt) of each sequence under `model`, in chunks of `batch_size`."""
    fn = lambda batch: sequence_logps(model, batch).sum  # noqa: E731
    return map_sequences(fn, prompts, completions, pad_id, batch_size, model_device(model))
