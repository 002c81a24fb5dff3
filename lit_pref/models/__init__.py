from lit_pref.models.companions import (
    CompanionModel,
    DisabledAdapter,
    FrozenCopy,
    Precomputed,
    RefreshableCopy,
)
from lit_pref.models.loading import LoraSettings, load_causal_lm, load_tokenizer
from lit_pref.models.logprobs import IGNORE_INDEX, TokenLogps, selective_log_softmax, sequence_logps

__all__ = [
    "IGNORE_INDEX",
    "CompanionModel",
    "DisabledAdapter",
    "FrozenCopy",
    "LoraSettings",
    "Precomputed",
    "RefreshableCopy",
    "TokenLogps",
    "load_causal_lm",
    "load_tokenizer",
    "selective_log_softmax",
    "sequence_logps",
]
