"""Prefix-shared and padding-free layouts of a batch: the same log-probs from fewer tokens.

A paired batch holds every prompt twice (chosen and rejected rows), a grouped one K times (MPO's samples), and
every row is padded to the longest. `plan_layout` rewrites a right-padded batch of prompt + response rows:

- prefix sharing: rows whose prompts (the tokens before the first labelled one) are equal become one sequence,
  prompt once, then each row's response, with position ids restarting at the prompt's length for every response
  and an attention mask where a response token sees the prompt and the earlier tokens of its own response only;
- packing: these sequences are laid into rows of at most `pack_tokens` tokens (first-fit, longest first), with a
  block-diagonal mask, so padding is only what is left at the end of a packed row.

Every token of every original row then has exactly the context (and position) it had in the plain batch, so its
hidden state is the same; `Layout.unpack` gathers the packed hidden states back into the original (B, T, .)
shape and everything downstream (the response-only LM head, last-token scores) runs unchanged. The gather's
backward adds the gradients of a shared prompt token from all its rows, as the plain batch does; it is an
`index_select`, whose backward (`index_add_`) adds in a fixed order. (Advanced indexing, `flat[index]`, adds
them atomically across threads on CPU, in an order that changes from run to run: at 2 threads two identical
runs differed by ~1e-7.)

The mask is a 4D (rows, 1, L, L) tensor: boolean for `sdpa` attention, additive for `eager`; models with another
attention implementation (FlashAttention, flex) keep the plain layout (`supports_layout`).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_pref.models.labels import IGNORE_INDEX

#: the last plan of each live batch, by id(input_ids) (`batch_plan`); an entry goes with its tensor
_PLANS: dict[int, tuple] = {}
#: attention implementations that take a custom 4D mask as given
MASKED_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class SequenceLayout:
    """How a batch's sequences are laid out for the forward pass.

    prefix_sharing: score rows with equal prompts as one sequence (prompt once, each response after it).
    pack_tokens: pack the sequences into rows of at most this many tokens (a longer sequence gets a row of its
        own); None keeps one sequence per row, padded to the longest.
    """

    prefix_sharing: bool = False
    pack_tokens: int | None = None

    @property
    def plain(self) -> bool:
        return not self.prefix_sharing and self.pack_tokens is None


PLAIN = SequenceLayout()


@dataclass
class Layout:
    """A batch rewritten for one forward: `input_ids`, `position_ids` (R, L) and the 4D `attention_mask`
    (R, 1, L, L, True = may attend); `index` (B, T) is the flat packed position of each original token."""

    input_ids: Tensor
    position_ids: Tensor
    attention_mask: Tensor
    index: Tensor

    def unpack(self, packed: Tensor) -> Tensor:
        """(R, L, ...) values of the packed rows -> (B, T, ...) values of the original rows (padding: a copy of
        some packed value, masked out downstream like any padding position)."""
        flat = packed.reshape(-1, *packed.shape[2:])
        return flat.index_select(0, self.index.reshape(-1)).view(*self.index.shape, *packed.shape[2:])

    def model_inputs(self, model: nn.Module) -> dict[str, Tensor]:
        """Keyword arguments of the model's forward, the mask in the form its attention takes."""
        mask = self.attention_mask
        if attention_implementation(model) == "eager":
            dtype = next(model.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                ~mask, torch.finfo(dtype).min
            )
        return {"input_ids": self.input_ids, "position_ids": self.position_ids, "attention_mask": mask}


def attention_implementation(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


_warned: set[str] = set()


def supports_layout(model: nn.Module) -> bool:
    """Whether the model's attention takes a custom 4D mask and position ids (HF `sdpa` or `eager`); warns once
    per implementation when it does not (the plain layout is used then: same log-probs, no saving)."""
    impl = attention_implementation(model)
    if impl in MASKED_ATTENTION:
        return True
    if impl not in _warned:
        _warned.add(impl)
        warnings.warn(
            f"lit_pref: prefix_sharing / pack_tokens need a model whose attention takes a custom 4D mask "
            f"(attn_implementation 'sdpa' or 'eager'); this model uses {impl!r}, so batches keep the plain "
            "padded layout (same log-probs, no saving). Load the model with attn_implementation='sdpa' to share "
            "prefixes, or set model.init_args.prefix_sharing: false and no pack_tokens to keep it without this warning",
            stacklevel=3,
        )
    return False


def _segments(ids: list[int], labels: list[int] | None, length: int) -> tuple[tuple[int, ...], list[int]]:
    """(prompt, response) token lists of one row: the prompt ends before the first labelled token (the whole row
    when nothing is labelled, e.g. a response truncated to nothing)."""
    first = next((t for t in range(1, length) if labels[t] != IGNORE_INDEX), length) if labels else length
    return tuple(ids[:first]), ids[first:length]


def _bins(sizes: list[int], capacity: int | None) -> list[list[int]]:
    """Groups of item indices: one per item without a capacity, else first-fit decreasing into bins of
    `capacity` (an item larger than it gets a bin of its own)."""
    if capacity is None:
        return [[i] for i in range(len(sizes))]
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        slot = next((b for b, r in enumerate(room) if r >= sizes[i]), None)
        if slot is None:
            bins.append([i])
            room.append(capacity - sizes[i])
        else:
            bins[slot].append(i)
            room[slot] -= sizes[i]
    return bins


def plan_layout(batch: dict[str, Tensor], layout: SequenceLayout, pad_id: int = 0) -> Layout:
    """The prefix-shared and/or packed layout of a right-padded batch (`input_ids`, `attention_mask`, and
    `labels` to tell prompts from responses; without labels nothing is shared)."""
    ids_t = batch["input_ids"]
    split, members = _group_rows(batch, layout.prefix_sharing)
    sizes = [len(split[g[0]][0]) + sum(len(split[b][1]) for b in g) for g in members]
    rows = _bins(sizes, layout.pack_tokens)
    width = max(sum(sizes[g] for g in row) for row in rows)
    tokens, positions, group_of, segment_of, index = _place(rows, members, split, width, ids_t.shape, pad_id)
    return Layout(
        input_ids=tokens.to(ids_t.device),
        position_ids=positions.to(ids_t.device),
        attention_mask=block_mask(group_of, segment_of).to(ids_t.device),
        index=index.to(ids_t.device),
    )


def _group_rows(batch: dict[str, Tensor], prefix_sharing: bool):
    """Each row's (prompt, response) token lists, and the groups: one prompt and the rows continuing it (a row
    on its own without sharing), as lists of row numbers."""
    lengths = batch["attention_mask"].sum(-1).tolist()
    ids = batch["input_ids"].tolist()
    labels = batch["labels"].tolist() if batch.get("labels") is not None and prefix_sharing else None
    groups: dict[object, list[int]] = {}
    split = []
    for b, n in enumerate(lengths):
        prompt, response = _segments(ids[b], labels[b] if labels else None, n)
        split.append((prompt, response))
        groups.setdefault(prompt if labels else b, []).append(b)
    return split, list(groups.values())


def _place(rows, members, split, width: int, shape, pad_id: int):
    """Lay the groups out in packed rows of `width`: tokens, positions, each position's group and segment (0 the
    prompt, k the k-th response; pads a group of their own), and where each batch token lands (`index`)."""
    n_rows = len(rows)
    tokens = torch.full((n_rows, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n_rows, width), dtype=torch.long)
    group_of = torch.arange(n_rows * width, dtype=torch.long).view(n_rows, width).neg() - 1  # pads: alone
    segment_of = torch.zeros((n_rows, width), dtype=torch.long)
    index = torch.zeros(shape, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for g in row:
            prompt = split[members[g][0]][0]
            p = len(prompt)
            tokens[r, at : at + p] = torch.tensor(prompt, dtype=torch.long)
            positions[r, at : at + p] = torch.arange(p)
            group_of[r, at : at + p] = g
            start = at
            at += p
            for k, b in enumerate(members[g], start=1):
                response = split[b][1]
                s = len(response)
                tokens[r, at : at + s] = torch.tensor(response, dtype=torch.long)
                positions[r, at : at + s] = torch.arange(p, p + s)
                group_of[r, at : at + s] = g
                segment_of[r, at : at + s] = k
                flat = r * width
                index[b, :p] = torch.arange(flat + start, flat + start + p)
                index[b, p : p + s] = torch.arange(flat + at, flat + at + s)
                at += s
    return tokens, positions, group_of, segment_of, index


def _version(tensor: Tensor | None) -> int:
    """The tensor's in-place modification count (inference-mode tensors keep none: -1)."""
    if tensor is None or tensor.is_inference():
        return -1
    return tensor._version


def batch_plan(batch: dict[str, Tensor], layout: SequenceLayout) -> Layout:
    """`plan_layout` of the batch, planned once for every forward over the same tensors (a DPO step's policy and
    reference, a rollout's scorers and updates). The plan is kept beside the batch, not in it, while its
    `input_ids` tensor lives, and is planned anew when the layout or any of the tensors changes (also in place)."""
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch.get("labels")
    key = (layout, _version(ids), id(mask), _version(mask), id(labels), _version(labels))
    kept = _PLANS.get(id(ids))
    if kept is not None and kept[0] == key:
        return kept[1]
    if kept is None:
        weakref.finalize(ids, _PLANS.pop, id(ids), None)
    plan = plan_layout(batch, layout)
    _PLANS[id(ids)] = (key, plan)
    return plan


def block_mask(group_of: Tensor, segment_of: Tensor) -> Tensor:
    """(R, 1, L, L) boolean mask from each position's sequence and segment (0 = the shared prompt, k = the k-th
    response): a token sees the earlier tokens of its own sequence that are prompt or in its own segment."""
    length = group_of.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    same_sequence = group_of[:, :, None] == group_of[:, None, :]
    visible = (segment_of[:, None, :] == 0) | (segment_of[:, :, None] == segment_of[:, None, :])
    return (causal & same_sequence & visible)[:, None]
