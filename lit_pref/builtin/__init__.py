"""Built-in models made by a recipe: the tiny sizes, word-level game and outcome models, SFT'd and DPO'd tiny
models.

This layer sits above the algorithms (the SFT recipe trains with lit_pref.SFT) and registers its recipes with the
model loader (lit_pref.models.artifacts.register_builtin), so the loader never imports anything above it.
Registering is cheap: a recipe imports what it trains with only when it builds.
"""

from lit_pref.builtin.sft import build_tiny_dpo, build_tiny_sft, dpo_recipe, sft_recipe
from lit_pref.builtin.word_models import (
    build_game_model,
    build_outcomes_base,
    build_word_level_model,
    game_cache_name,
)
from lit_pref.models.artifacts import Recipe, register_builtin
from lit_pref.models.tiny import SIZES, build_size

register_builtin(
    Recipe(
        matches=lambda name: name in SIZES,
        build=build_size,
        usage=", ".join(f"'builtin:{size}'" for size in SIZES),
        settings=lambda name: {"size": SIZES[name]},
    )
)
register_builtin(
    Recipe(
        matches=lambda name: name.startswith("game-"),
        build=build_game_model,
        usage="'builtin:game-<game or YAML game file>'",
        settings=lambda name: {"game": game_cache_name(name)},
        cache_name=game_cache_name,
    )
)
register_builtin(
    Recipe(
        matches=lambda name: name == "outcomes-base",
        build=build_outcomes_base,
        usage="'builtin:outcomes-base'",
    )
)
register_builtin(
    Recipe(
        matches=lambda name: "-sft-" in name and name.split("-sft-")[0] in SIZES,
        build=build_tiny_sft,
        usage="'builtin:<size>-sft-<task>'",
        settings=sft_recipe,
    )
)
register_builtin(
    Recipe(
        matches=lambda name: "-dpo-" in name and name.split("-dpo-")[0] in SIZES,
        build=build_tiny_dpo,
        usage="'builtin:<size>-dpo-<task>'",
        settings=dpo_recipe,
    )
)

__all__ = [
    "build_game_model",
    "build_outcomes_base",
    "build_tiny_dpo",
    "build_tiny_sft",
    "build_word_level_model",
]
