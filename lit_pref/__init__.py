"""lit_pref: preference optimization of language models on PyTorch Lightning."""

from lit_pref.algorithms import (
    DPO,
    IRFT,
    MPO,
    RFT,
    SFT,
    WSPO,
    BestOfNFineTune,
    CausalPO,
    OnlineModule,
    OutcomeModel,
    PolicyModule,
    RewardModel,
)
from lit_pref.callbacks import (
    CompanionRefresh,
    DivergenceGuard,
    ExportHF,
    GameMetrics,
    GenerationSamples,
    MagnetUpdate,
    OutcomeRegret,
    PredictionWriter,
    RewardEvaluation,
)
from lit_pref.checkpoints import AtomicCheckpointIO
from lit_pref.data import PreferenceDataModule
from lit_pref.errors import CheckpointError, ConfigError, DataError, DivergenceError, LitPrefError
from lit_pref.models import (
    CompanionModel,
    DisabledAdapter,
    FrozenCopy,
    LoraSettings,
    Precomputed,
    RefreshableCopy,
)
from lit_pref.oracles import (
    BradleyTerryOracle,
    CallableOracle,
    CyclicStyleOracle,
    MatrixOracle,
    PreferenceOracle,
)
from lit_pref.rewards import CallableReward, Reward, RewardModelScorer, TaskReward
from lit_pref.sampling import PRS, PRand, Rand, Sampler, SamplingConfig

__version__ = "0.1.0"

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointError",
    "DivergenceError",
    "DivergenceGuard",
    "BestOfNFineTune",
    "CausalPO",
    "CompanionRefresh",
    "OnlineModule",
    "SamplingConfig",
    "PRS",
    "PRand",
    "Rand",
    "Sampler",
    "OutcomeModel",
    "OutcomeRegret",
    "DPO",
    "IRFT",
    "MPO",
    "RFT",
    "WSPO",
    "GameMetrics",
    "MagnetUpdate",
    "BradleyTerryOracle",
    "CallableOracle",
    "CyclicStyleOracle",
    "MatrixOracle",
    "PreferenceOracle",
    "SFT",
    "CompanionModel",
    "ConfigError",
    "DataError",
    "DisabledAdapter",
    "ExportHF",
    "FrozenCopy",
    "GenerationSamples",
    "LitPrefError",
    "LoraSettings",
    "PolicyModule",
    "Precomputed",
    "PredictionWriter",
    "PreferenceDataModule",
    "RefreshableCopy",
    "Reward",
    "RewardEvaluation",
    "RewardModel",
    "RewardModelScorer",
    "TaskReward",
    "CallableReward",
]

import lit_pref.builtin  # noqa: E402, F401  (registers the built-in model recipes with the loader)
