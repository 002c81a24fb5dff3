"""The one sequence log-prob routine every method uses.

Positions whose label is IGNORE_INDEX (-100: prompt and padding) never count. Log-probs are computed with a
selective log-softmax, logit[label] - logsumexp(logits), in row chunks, so no full (N, V) log-softmax copy is
ever materialized.

By default the LM head itself is selective too (`response_head_logps`): the decoder runs once, then only the
labelled positions go through the output projection, in row chunks of at most `max_logits_elements` logits that
are recomputed in the backward pass, so the (N, T, V) logits tensor never exists. `max_logits_elements=None`
keeps the plain path (full logits), which tests hold it equal to.

A `SequenceLayout` (lit_pref.models.packing) shares the prompt of rows that continue the same prompt and packs
sequences without padding; the decoder then runs on the rewritten batch and its hidden states are gathered back
into the batch's own (B, T) shape, so the result is the same `TokenLogps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lit_pref.models.labels import IGNORE_INDEX
from lit_pref.models.packing import PLAIN, Layout, SequenceLayout, batch_plan, supports_layout

#: default bound on the logits (rows x vocab) one LM-head chunk materializes: 64 MiB in float32
MAX_LOGITS_ELEMENTS = 1 << 24


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


def _head_logps(head: nn.Module, hidden: Tensor, targets: Tensor) -> Tensor:
    return selective_log_softmax(head(hidden), targets, chunk_rows=hidden.shape[0] or 1)


def response_head_logps(head: nn.Module, hidden: Tensor, labels: Tensor, chunk_rows: int) -> TokenLogps:
    """Log-probs from final hidden states (B, T, H): the LM head scores only labelled positions.

    Rows go through `head` `chunk_rows` at a time. With several chunks and gradients on, each chunk is
    checkpointed: its logits are freed after the forward and recomputed in the backward, so peak memory holds
    one chunk's logits instead of all of them (at the cost of one more head matmul per chunk).
    """
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != IGNORE_INDEX
    rows, targets = hidden[:, :-1][mask], shifted_labels[mask]
    recompute = torch.is_grad_enabled() and rows.shape[0] > chunk_rows
    pieces = [
        checkpoint(
            _head_logps, head, rows[s : s + chunk_rows], targets[s : s + chunk_rows], use_reentrant=False
        )
        if recompute
        else _head_logps(head, rows[s : s + chunk_rows], targets[s : s + chunk_rows])
        for s in range(0, rows.shape[0], chunk_rows)
    ]
    flat = torch.cat(pieces) if pieces else rows.sum(-1).float()  # (0,), still attached to the graph
    logps = torch.zeros(mask.shape, dtype=torch.float32, device=rows.device).masked_scatter(mask, flat)
    return TokenLogps(logps, mask.to(logps.dtype))


class _ResponseHead(nn.Module):
    """Stands in for a causal LM's output head during one forward and returns per-token log-probs of the
    labelled positions, shape (B, T-1), instead of logits. Running inside the model's own forward keeps every
    wrapper's hooks in play: PEFT adapters, and FSDP2 (the root's weights are unsharded during its forward)."""

    def __init__(self, head: nn.Module, labels: Tensor, chunk_rows: int, plan: Layout | None = None):
        super().__init__()
        self.head = head
        self.labels = labels
        self.chunk_rows = chunk_rows
        self.plan = plan
        self.result: TokenLogps | None = None

    def forward(self, hidden: Tensor) -> Tensor:
        if self.plan is not None:
            hidden = self.plan.unpack(hidden)
        self.result = response_head_logps(self.head, hidden, self.labels, self.chunk_rows)
        return self.result.logps


def _head_slot(model: nn.Module) -> tuple[nn.Module, str, nn.Module] | None:
    """(parent, attribute, head) of the model's output projection, or None where the response head cannot
    replace it (no standard head, or logits post-processed after the head, e.g. soft-capping or scaling)."""
    config = getattr(model, "config", None)
    if any(getattr(config, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale")):
        return None
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    if head is None:
        return None
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is head:
                return parent, name, head
    return None


def layout_inputs(
    model: nn.Module, batch: dict[str, Tensor], layout: SequenceLayout
) -> tuple[dict[str, Tensor], Layout | None]:
    """The model's keyword inputs for the batch in `layout`, and the plan that unpacks its outputs (None: the
    plain padded batch, also for models whose attention cannot take the layout's mask)."""
    mask = batch["attention_mask"]
    right_padded = bool((mask[:, 1:] <= mask[:, :-1]).all())  # the layouts read rows as prompt, response, pad
    if layout.plain or not right_padded or not supports_layout(model):
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "use_cache": False,
        }, None
    plan = batch_plan(batch, layout)
    return {**plan.model_inputs(model), "use_cache": False}, plan


def sequence_logps(
    model: nn.Module,
    batch: dict[str, Tensor],
    max_logits_elements: int | None = MAX_LOGITS_ELEMENTS,
    layout: SequenceLayout = PLAIN,
) -> TokenLogps:
    """One forward of `model` over the batch (chosen+rejected already concatenated for pairwise data).

    With `max_logits_elements` set (the default) the LM head scores only response positions, in chunks (see
    `response_head_logps`); None, or a model whose head cannot be swapped, takes the plain path through the
    full (B, T, V) logits. Both give the same log-probs, and so does every `layout` (prefix sharing, packing).
    """
    inputs, plan = layout_inputs(model, batch, layout)
    slot = _head_slot(model) if max_logits_elements is not None else None
    if slot is None:
        logits = model(**inputs).logits
        return token_logps_from_logits(plan.unpack(logits) if plan else logits, batch["labels"])
    parent, name, head = slot
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or getattr(head, "out_features", 1)
    response_head = _ResponseHead(head, batch["labels"], max(1, max_logits_elements // vocab), plan)
    setattr(parent, name, response_head)
    try:
        model(**inputs)
    finally:
        setattr(parent, name, head)
    return response_head.result
