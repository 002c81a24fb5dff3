"""Models: loading, LoRA, log-probs, companion providers, built-in models. Public names load on first use, so the
light parts (lit_pref.models.artifacts, tiny) import without torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(
        ["CompanionModel", "DisabledAdapter", "FrozenCopy", "Precomputed", "RefreshableCopy"],
        "lit_pref.models.companions",
    ),
    **dict.fromkeys(["LoraSettings", "load_causal_lm", "load_tokenizer"], "lit_pref.models.loading"),
    **dict.fromkeys(
        ["IGNORE_INDEX", "TokenLogps", "selective_log_softmax", "sequence_logps"], "lit_pref.models.logprobs"
    ),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lit_pref.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
