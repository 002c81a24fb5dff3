"""Built-in models made by a recipe (word-level game and outcome models, SFT'd tiny models).

This layer sits above the algorithms (the SFT recipe trains with lit_pref.SFT) and registers its recipes with
the model loader (lit_pref.models.tiny.register_builtin), so the loader never imports anything above it.
"""

from lit_pref.builtin.sft import build_tiny_dpo, build_tiny_sft
from lit_pref.builtin.word_models import (
    build_game_model,
    build_outcomes_base,
    build_word_level_model,
    game_cache_name,
)
from lit_pref.models.tiny import SIZES, Recipe, atomic_build, register_builtin

register_builtin(
    Recipe(
        matches=lambda name: name.startswith("game-"),
        build=lambda folder, name: atomic_build(folder, lambda tmp: build_game_model(tmp, name)),
        usage="'builtin:game-<game or YAML game file>'",
        cache_name=game_cache_name,
    )
)
register_builtin(
    Recipe(
        matches=lambda name: name == "outcomes-base",
        build=lambda folder, name: atomic_build(folder, build_outcomes_base),
        usage="'builtin:outcomes-base'",
    )
)
register_builtin(
    Recipe(
        matches=lambda name: "-sft-" in name and name.split("-sft-")[0] in SIZES,
        build=build_tiny_sft,
        usage="'builtin:<size>-sft-<task>'",
    )
)
register_builtin(
    Recipe(
        matches=lambda name: "-dpo-" in name and name.split("-dpo-")[0] in SIZES,
        build=build_tiny_dpo,
        usage="'builtin:<size>-dpo-<task>'",
    )
)

__all__ = ["build_game_model", "build_outcomes_base", "build_tiny_dpo", "build_tiny_sft", "build_word_level_model"]
