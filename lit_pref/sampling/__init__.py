"""Generation and samplers as plain functions: no LightningModule in here (docs/architecture.md: layers)."""

from lit_pref.sampling.config import GREEDY, SamplingConfig
from lit_pref.sampling.generate import (
    Generation,
    GeometricMixture,
    PresencePenalty,
    decode_completions,
    generate,
)
from lit_pref.sampling.samplers import (
    PRS,
    Candidate,
    Policy,
    PRand,
    Rand,
    Sampled,
    Sampler,
    official_sampling,
    with_preference,
)

__all__ = [
    "GREEDY",
    "PRS",
    "Candidate",
    "Generation",
    "GeometricMixture",
    "Policy",
    "PRand",
    "PresencePenalty",
    "Rand",
    "Sampled",
    "Sampler",
    "SamplingConfig",
    "decode_completions",
    "generate",
    "official_sampling",
    "with_preference",
]
