"""Scalar scores from a sequence-classification model, read at the last attended token."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_pref.models.logprobs import layout_inputs
from lit_pref.models.packing import PLAIN, SequenceLayout


class _ScoreRecorder(nn.Module):
    """Stands in for the score head during one forward and keeps its per-position output, so the model's own
    forward runs (PEFT's and FSDP2's hooks in play: the root's weights are unsharded during it)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head
        self.output: Tensor | None = None

    def forward(self, hidden: Tensor) -> Tensor:
        self.output = self.head(hidden)
        return self.output


def last_token_scores(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor | None = None,
    layout: SequenceLayout = PLAIN,
) -> Tensor:
    """One float per sequence: the score head applied to the hidden state of the last position whose
    attention mask is 1 (right or left padding alike, and correct when the pad token is also EOS). `layout`
    shares prompts (told apart by `labels`) and packs rows, with the same scores."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # through a LoRA wrapper
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    inputs, plan = layout_inputs(inner, batch, layout)
    recorder = _ScoreRecorder(inner.score)
    inner.score = recorder
    try:
        pooled = model(**inputs).logits  # pooled by the model's own rule; ours is read below
    finally:
        inner.score = recorder.head
    scores = plan.unpack(recorder.output) if plan is not None else recorder.output
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask * positions).argmax(-1)
    picked = scores[torch.arange(scores.shape[0], device=scores.device), last, 0].float()
    # FSDP2 unshards the root's weights for backward when the gradient reaches the forward's OUTPUT; a zero
    # path through it makes that happen before the head's backward (a no-op without FSDP2)
    return picked + 0.0 * pooled.float().sum() if pooled.requires_grad else picked


def score_texts(model: nn.Module, renderer, prompts: list, responses: list, batch_size: int = 32) -> Tensor:
    """Scores of (prompt, response) texts rendered exactly as training rows are (see data.render.Renderer)."""
    from lit_pref.models.batching import map_sequences, model_device

    encoded = [renderer.encode(p, r) for p, r in zip(prompts, responses)]
    fn = lambda batch: last_token_scores(model, batch["input_ids"], batch["attention_mask"])  # noqa: E731
    return map_sequences(fn, [e[0] for e in encoded], [e[1] for e in encoded], renderer.tokenizer.pad_token_id,
                         batch_size, model_device(model))  # fmt: skip
