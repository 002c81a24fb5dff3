"""Built-in models made by a recipe (word-level game and outcome models, SFT'd tiny models).

This layer sits above the algorithms (the SFT recipe trains with lit_pref.SFT) and registers its recipes with
the model loader (lit_pref.models.tiny.register_builtin), so the loader never imports anything above it.
"""

from lit_pref.builtin.sft import build_tiny_sft
from lit_pref.builtin.word_models import build_game_model, build_outcomes_base, build_word_level_model
from lit_pref.models.tiny import SIZES, atomic_build, register_builtin

register_builtin(
    lambda name: name.startswith("game-"),
    lambda folder, name: atomic_build(folder, lambda tmp: build_game_model(tmp, name)),
    "'builtin:game-<game>'",
)
register_builtin(
    lambda name: name == "outcomes-base",
    lambda folder, name: atomic_build(folder, build_outcomes_base),
    "'builtin:outcomes-base'",
)
register_builtin(
    lambda name: "-sft-" in name and name.split("-sft-")[0] in SIZES,
    build_tiny_sft,
    "'builtin:<size>-sft-<task>'",
)

__all__ = ["build_game_model", "build_outcomes_base", "build_tiny_sft", "build_word_level_model"]
