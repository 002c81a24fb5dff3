"""lit_pref: preference optimization of language models on PyTorch Lightning.

The public names (`lit_pref.DPO`, `lit_pref.RewardEvaluation`, ...) are imported on first use, so a command that
needs none of them (`python -m lit_pref --help`) starts without importing torch, Lightning or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    **dict.fromkeys(
        [
            "BestOfNFineTune",
            "CausalPO",
            "DPO",
            "IRFT",
            "MPO",
            "NashMD",
            "OnlineModule",
            "OutcomeModel",
            "PolicyModule",
            "RFT",
            "RewardModel",
            "SFT",
            "SPPO",
            "SelfPlay",
            "WSPO",
        ],
        "lit_pref.algorithms",
    ),
    **dict.fromkeys(
        [
            "CompanionRefresh",
            "DivergenceGuard",
            "ExportHF",
            "GameMetrics",
            "GenerationSamples",
            "MagnetUpdate",
            "OutcomeRegret",
            "PredictionWriter",
            "RewardEvaluation",
            "StepProgressBar",
        ],
        "lit_pref.callbacks",
    ),
    **dict.fromkeys(["DataNeeds", "PreferenceDataModule"], "lit_pref.data"),
    **dict.fromkeys(["AtomicCheckpointIO"], "lit_pref.checkpoints"),
    **dict.fromkeys(
        ["CheckpointError", "ConfigError", "DataError", "DivergenceError", "LitPrefError"], "lit_pref.errors"
    ),
    **dict.fromkeys(
        ["CompanionModel", "DisabledAdapter", "FrozenCopy", "LoraSettings", "Precomputed", "RefreshableCopy"],
        "lit_pref.models",
    ),
    **dict.fromkeys(
        ["BradleyTerryOracle", "CallableOracle", "CyclicStyleOracle", "MatrixOracle", "PreferenceOracle"],
        "lit_pref.oracles",
    ),
    **dict.fromkeys(["CallableReward", "Reward", "RewardModelScorer", "TaskReward"], "lit_pref.rewards"),
    **dict.fromkeys(
        ["GeometricMixture", "PRS", "PRand", "Rand", "Sampler", "SamplingConfig"], "lit_pref.sampling"
    ),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lit_pref' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


import lit_pref.builtin  # noqa: E402, F401  (registers the built-in model recipes with the loader; cheap)
