from lit_pref.callbacks.export import ExportHF, export_module
from lit_pref.callbacks.predictions import PredictionWriter
from lit_pref.callbacks.reward_eval import RewardEvaluation
from lit_pref.callbacks.samples import GenerationSamples

__all__ = ["ExportHF", "GenerationSamples", "PredictionWriter", "RewardEvaluation", "export_module"]
