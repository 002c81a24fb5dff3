"""Sampling settings, set from YAML as one group (e.g. `model.init_args.sampling: {temperature: 0.8, top_k: 50}`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lit_pref.errors import check_range


@dataclass
class SamplingConfig:
    """How completions are generated.

    Args:
        max_new_tokens: Generation limit; unset: the data's max_length - max_prompt_length.
        do_sample: Sample (true) or decode greedily (false; temperature, top_k, top_p are then unused).
        temperature: Softmax temperature (> 0).
        top_k: Keep the k most likely tokens (0: off).
        top_p: Nucleus sampling: keep the smallest set of tokens with probability >= top_p (1.0: off).
        repetition_penalty: Hugging Face's multiplicative penalty on tokens already in the sequence (1.0: off).
        presence_penalty: Subtracted from the logit of every token the completion already contains, once per
            token (vLLM/OpenAI semantics; 0.0: off).
        stop_strings: Stop a completion once it contains one of these strings (besides EOS).
        seed: Base seed; a batch of prompts starting at row r of a call is sampled with seed + r.
    """

    max_new_tokens: int | None = None
    do_sample: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    stop_strings: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self):
        check_range("sampling.max_new_tokens", self.max_new_tokens, ge=1)
        check_range("sampling.temperature", self.temperature, gt=0)
        check_range("sampling.top_k", self.top_k, ge=0)
        check_range("sampling.top_p", self.top_p, gt=0, le=1)
        check_range("sampling.repetition_penalty", self.repetition_penalty, gt=0)

    def replace(self, **changes) -> SamplingConfig:
        """A copy with some settings changed (validated again)."""
        return SamplingConfig(**{**asdict(self), **changes})


GREEDY = SamplingConfig(do_sample=False)
