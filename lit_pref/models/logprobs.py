"""The one sequence log-prob routine every method uses.

Positions whose label is IGNORE_INDEX (-100: prompt and padding) never count. Log-probs are computed with a
selective log-softmax, logit[label] - logsumexp(logits), in row chunks, so no full (N, V) log-softmax copy is
ever materialized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

IGNORE_INDEX = -100


def selective_log_softmax(logits: Tensor, index: Tensor, chunk_rows: int = 4096) -> Tensor:
    """log softmax(logits)[..., index] without materializing the full log-softmax.

    `logits` is (..., V) and `index` (...) holds valid token ids. Computed in float32 one chunk of rows at a
    time to bound peak memory for large vocabularies and low-precision logits.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_index = index.reshape(-1)
    out = torch.empty(flat_index.shape, dtype=torch.float32, device=logits.device)
    for start in range(0, flat_logits.shape[0], chunk_rows):
        rows = flat_logits[start : start + chunk_rows].float()
        picked = rows.gather(-1, flat_index[start : start + chunk_rows, None]).squeeze(-1)
        out[start : start + chunk_rows] = picked - torch.logsumexp(rows, dim=-1)
    return out.view(index.shape)


@dataclass
class TokenLogps:
    """Per-token log-probs of the labelled (response) tokens of a batch.

    `logps` and `mask` are (B, T-1), aligned with `labels[:, 1:]`; masked positions hold 0.
    """

    logps: Tensor
    mask: Tensor

    @property
    def sum(self) -> Tensor:
        """Summed sequence log-prob l(y|x), shape (B,)."""
        return self.logps.sum(-1)

    @property
    def count(self) -> Tensor:
        """Number of response tokens per sequence, shape (B,)."""
        return self.mask.sum(-1)

    @property
    def mean(self) -> Tensor:
        """Length-mean sequence log-prob l-bar(y|x), shape (B,)."""
        return self.sum / self.count.clamp(min=1)

    def sequence(self, average: bool) -> Tensor:
        """`mean` if average else `sum`."""
        return self.mean if average else self.sum

    def split(self, n: int) -> tuple[TokenLogps, TokenLogps]:
        """First n rows and the rest: the chosen and rejected halves of a concatenated pairwise batch."""
        return TokenLogps(self.logps[:n], self.mask[:n]), TokenLogps(self.logps[n:], self.mask[n:])


def token_logps_from_logits(logits: Tensor, labels: Tensor) -> TokenLogps:
    """Shift logits against labels and gather the log-prob of every labelled token."""
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != IGNORE_INDEX
    safe_labels = shifted_labels.masked_fill(~mask, 0)
    logps = selective_log_softmax(logits[:, :-1], safe_labels)
    return TokenLogps(logps * mask, mask.to(logps.dtype))


def sequence_logps(model: nn.Module, batch: dict[str, Tensor]) -> TokenLogps:
    """One forward of `model` over the batch (chosen+rejected already concatenated for pairwise data)."""
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).logits
    return token_logps_from_logits(logits, batch["labels"])
