"""Generation and samplers as plain functions: no LightningModule in here (docs/architecture.md: layers)."""

from lit_pref.sampling.config import GREEDY, SamplingConfig
from lit_pref.sampling.generate import Generation, PresencePenalty, decode_completions, generate

__all__ = ["GREEDY", "Generation", "PresencePenalty", "SamplingConfig", "decode_completions", "generate"]
