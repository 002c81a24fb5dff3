from lit_pref.callbacks.divergence import DivergenceGuard
from lit_pref.callbacks.export import ExportHF, export_module
from lit_pref.callbacks.game import GameMetrics
from lit_pref.callbacks.outcomes import OutcomeRegret
from lit_pref.callbacks.periodic import PeriodicCallback
from lit_pref.callbacks.predictions import PredictionWriter
from lit_pref.callbacks.progress import StepProgressBar
from lit_pref.callbacks.refresh import CompanionRefresh, MagnetUpdate
from lit_pref.callbacks.reward_eval import RewardEvaluation
from lit_pref.callbacks.samples import GenerationSamples

__all__ = [
    "CompanionRefresh",
    "DivergenceGuard",
    "ExportHF",
    "GameMetrics",
    "GenerationSamples",
    "MagnetUpdate",
    "OutcomeRegret",
    "PeriodicCallback",
    "PredictionWriter",
    "RewardEvaluation",
    "StepProgressBar",
    "export_module",
]
