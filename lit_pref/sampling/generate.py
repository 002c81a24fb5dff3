"""Generation as a plain function of (model, tokenizer, prompts, settings): batched, KV-cached, left-padded.

Every caller (online methods, evaluation and sample-logging callbacks, commands, tools) goes through `generate`,
which also counts the tokens it spent, so samplers can be compared at equal compute.

Seeding: Hugging Face's `generate` draws from torch's global generator, so each batch runs inside
`torch.random.fork_rng` seeded with `seed + first row of the batch`: the samples are a pure function of
(weights, prompts, settings, seed) and the caller's own random stream is left untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_pref.models.batching import left_padded_prompts, model_device
from lit_pref.sampling.config import SamplingConfig


@dataclass
class Generation:
    """Completions of a list of prompts, with the tokens they cost.

    completions: token ids of each completion, up to and including EOS (nothing after it).
    texts: the completions decoded (`decode_completions`).
    prompt_tokens: prompt tokens processed (non-padding), summed over the prompts.
    generated_tokens: tokens generated (EOS included), summed over the completions.
    """

    completions: list[list[int]]
    texts: list[str]
    prompt_tokens: int
    generated_tokens: int


class PresencePenalty:
    """Logits processor: subtract `penalty` from every token already present in the completion (not the prompt)."""

    def __init__(self, penalty: float, prompt_width: int):
        self.penalty = penalty
        self.prompt_width = prompt_width

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        generated = input_ids[:, self.prompt_width :]
        if generated.shape[1] == 0:
            return scores
        present = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, generated, True)
        return scores - self.penalty * present.to(scores.dtype)


def decode_completions(tokenizer, completions: list[list[int]]) -> list[str]:
    """Text of generated completions: the trailing EOS is dropped and nothing else, since a completion holds
    no padding and a response token may double as a special token (the games' pad token is a response)."""
    eos = tokenizer.eos_token_id
    trimmed = [c[:-1] if c and c[-1] == eos else c for c in completions]
    return tokenizer.batch_decode(trimmed, skip_special_tokens=False)


def _cut(row: list[int], eos: int | None, pad: int | None, stopped_by_string: bool) -> list[int]:
    if eos is not None and eos in row:
        return row[: row.index(eos) + 1]
    if stopped_by_string and pad is not None:  # finished rows are filled with pad after a stop string
        while row and row[-1] == pad:
            row = row[:-1]
    return row


class GeometricMixture:
    """Logits processor: sample from the token-level geometric mixture pi^(1 - weight) other^weight (Nash-MD's
    opponent), log_softmax of the sampled model's scores mixed with `other`'s next-token log-probs.

    `other` runs beside the sampled model on the same tokens, with its own KV cache (one processor per batch;
    `mask` is the batch's left-padded prompt mask). The scores it mixes are those of the earlier processors of
    the call (temperature, top-k, top-p included, as Hugging Face applies them)."""

    def __init__(self, other: nn.Module, mask: Tensor, weight: float):
        self.other, self.mask, self.weight = other, mask, weight
        self.past = None

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        mask = torch.nn.functional.pad(self.mask, (0, input_ids.shape[1] - self.mask.shape[1]), value=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        new = input_ids.shape[1] if self.past is None else 1  # the prompt first, then one token per step
        out = self.other(input_ids=input_ids[:, -new:], attention_mask=mask, position_ids=positions[:, -new:],
                         cache=self.past, use_cache=True)  # fmt: skip
        self.past = out.cache
        other = out.logits[:, -1].float().log_softmax(-1)
        return (1 - self.weight) * scores.float().log_softmax(-1) + self.weight * other


def _generate_batch(model, tokenizer, ids: Tensor, mask: Tensor, config: SamplingConfig, max_new: int,
                    synced_gpus: bool, processors: Callable[[Tensor], list] | None) -> list[list[int]]:  # fmt: skip
    sampling = {"temperature": config.temperature, "top_k": config.top_k, "top_p": config.top_p}
    extra = {}
    custom = [PresencePenalty(config.presence_penalty, ids.shape[1])] if config.presence_penalty else []
    custom += processors(mask) if processors is not None else []
    if custom:
        from transformers import LogitsProcessorList

        extra["logits_processor"] = LogitsProcessorList(custom)
    if config.stop_strings:
        extra.update(stop_strings=list(config.stop_strings), tokenizer=tokenizer)
    if config.repetition_penalty != 1.0:
        extra["repetition_penalty"] = config.repetition_penalty
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_new,
        do_sample=config.do_sample,
        **(sampling if config.do_sample else {"temperature": None, "top_k": None, "top_p": None}),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
        synced_gpus=synced_gpus,
        **extra,
    )
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stop = bool(config.stop_strings) and pad != eos
    return [_cut(row, eos, pad, stop) for row in out[:, ids.shape[1] :].tolist()]


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer,
    prompts: list[list[int]],
    config: SamplingConfig,
    batch_size: int = 32,
    seed: int | None = None,
    max_new_tokens: int | None = None,
    synced_gpus: bool = False,
    processors: Callable[[Tensor], list] | None = None,
) -> Generation:
    """Complete each prompt (token ids) once with `model`, `batch_size` prompts per KV-cached `generate` call.

    `seed` overrides `config.seed`; `max_new_tokens` is the fallback when `config.max_new_tokens` is unset.
    Under FSDP2 pass `synced_gpus=True` on every rank (generation is then collective). `processors(mask)` gives
    extra logits processors for each batch (e.g. a GeometricMixture), from its left-padded prompt mask."""
    max_new = config.max_new_tokens or max_new_tokens
    if max_new is None:
        raise ValueError("generate needs config.max_new_tokens or max_new_tokens")
    base_seed = config.seed if seed is None else seed
    device = model_device(model)
    was_training = model.training
    model.eval()
    completions: list[list[int]] = []
    try:
        for start in range(0, len(prompts), batch_size):
            ids, mask = left_padded_prompts(prompts[start : start + batch_size], tokenizer.pad_token_id)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(base_seed + start)
                completions += _generate_batch(
                    model,
                    tokenizer,
                    ids.to(device),
                    mask.to(device),
                    config,
                    max_new,
                    synced_gpus,
                    processors,
                )
    finally:
        model.train(was_training)
    return Generation(
        completions=completions,
        texts=decode_completions(tokenizer, completions),
        prompt_tokens=sum(len(p) for p in prompts),
        generated_tokens=sum(len(c) for c in completions),
    )
