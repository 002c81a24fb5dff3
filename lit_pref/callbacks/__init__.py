from lit_pref.callbacks.export import ExportHF, export_module
from lit_pref.callbacks.game import GameMetrics
from lit_pref.callbacks.magnet import MagnetUpdate
from lit_pref.callbacks.outcomes import OutcomeRegret
from lit_pref.callbacks.predictions import PredictionWriter
from lit_pref.callbacks.reward_eval import RewardEvaluation
from lit_pref.callbacks.samples import GenerationSamples

__all__ = [
    "ExportHF",
    "GameMetrics",
    "MagnetUpdate",
    "OutcomeRegret",
    "GenerationSamples",
    "PredictionWriter",
    "RewardEvaluation",
    "export_module",
]
