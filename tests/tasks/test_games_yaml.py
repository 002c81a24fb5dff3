"""User-defined preference games (YAML): the definition, its Nash equilibrium by linear programming and exact
duality gaps against hand values, the game's own model (built and cached from the definition), the oracle and
metrics taking the same file, and MPO in exact mode on a 4-response game."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import yaml

import lit_pref
from lit_pref.callbacks.game import policy_distribution
from lit_pref.errors import ConfigError
from lit_pref.models.artifacts import resolve_model_path
from lit_pref.models.loading import load_tokenizer
from lit_pref.tasks.games import duality_gap, get_game, nash_equilibrium, regularized_equilibrium
from tests.conftest import REPO
from tests.helpers import trainer

GAME = str(REPO / "configs" / "games" / "cyclic4.yaml")
A = np.array([[0, 1, -2, 1], [-1, 0, 3, 1], [2, -3, 0, -2], [-1, -1, 2, 0]], dtype=float)


def test_yaml_game_nash_equilibrium_and_duality_gaps_by_hand():
    game = get_game(GAME)
    assert game.responses() == ["red", "green", "blue", "gold"] and game.prompt == "red"
    assert np.allclose(game.matrix, 0.5 + A / 6)  # strengths with the default scale max |A| = 3
    ne = game.nash()
    assert ne == pytest.approx([1 / 2, 1 / 3, 1 / 6, 0.0], abs=1e-9)
    assert (A @ ne) == pytest.approx([0, 0, 0, -1 / 2], abs=1e-9)  # gold loses to pi* although it beats blue
    P = game.matrix
    assert duality_gap(P, ne) == pytest.approx(0.0, abs=1e-9)
    assert duality_gap(P, np.full(4, 0.25)) == pytest.approx(1 / 4, abs=1e-12)  # max row sum of A / 4 = 3/4
    assert duality_gap(P, np.array([1.0, 0, 0, 0])) == pytest.approx(2 / 3, abs=1e-12)  # blue beats red: 5/6
    assert duality_gap(P, game.start) == pytest.approx(2 * (0.5 + (A @ game.start).max() / 6) - 1, abs=1e-12)


def test_an_inline_definition_and_a_matrix_give_the_same_game():
    definition = yaml.safe_load(Path(GAME).read_text())
    inline = get_game(definition)
    as_matrix = get_game(
        {**{k: v for k, v in definition.items() if k != "strengths"}, "matrix": (0.5 + A / 6).tolist()}
    )
    for game in (inline, as_matrix):
        assert (
            np.allclose(game.matrix, get_game(GAME).matrix) and game.responses() == get_game(GAME).responses()
        )
    scaled = get_game({**definition, "scale": 6})  # P = 1/2 + A / 12: same equilibrium, half the gaps
    assert scaled.nash() == pytest.approx([1 / 2, 1 / 3, 1 / 6, 0.0], abs=1e-9)
    assert duality_gap(scaled.matrix, np.full(4, 0.25)) == pytest.approx(1 / 8)


def test_linear_programming_scales_past_support_enumeration():
    rng = np.random.default_rng(0)
    n = 40  # 2^40 supports: out of reach of enumeration
    B = rng.normal(size=(n, n))
    P = 0.5 + np.tanh(np.triu(B, 1) - np.triu(B, 1).T) / 2
    ne = nash_equilibrium(P)
    assert ne.sum() == pytest.approx(1.0) and (ne >= 0).all()
    assert duality_gap(P, ne) == pytest.approx(0.0, abs=1e-8)
    assert duality_gap(P, np.full(n, 1 / n)) > 0.05


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"strengths": [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]},
            r"skew-symmetric, but A\[0\]\[1\]",
        ),
        ({"strengths": [[0, 1], [-1, 0]]}, r"`strengths` must be 4x4"),
        ({"matrix": [[0.5] * 4] * 4}, "exactly one of `matrix`"),
        ({"start": [0.5, 0.5, 0.5, 0.5]}, "`start` must sum to 1"),
        ({"start": [1.0, 0.0, 0.0, 0.0]}, "positive probabilities"),
        ({"responses": ["red", "green", "blue", "red"]}, "duplicates"),
        ({"responses": ["red", "green", "blue", "gold star"]}, "same number of words"),
        ({"prompt": "hello"}, "`prompt` 'hello' must be one of"),
        ({"scale": 1}, r"`scale` must be >= max \|A\| = 3"),
        ({"colour": 1}, r"unknown key\(s\) \['colour'\]"),
    ],
)
def test_bad_definitions_name_the_file_and_key(tmp_path, change, message):
    definition = {**yaml.safe_load(Path(GAME).read_text()), **change}
    if "matrix" in change:
        definition["strengths"] = A.tolist()
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(definition))
    with pytest.raises(ConfigError, match=message) as info:
        get_game(str(path))
    assert "bad.yaml" in str(info.value)


def test_a_game_of_two_word_responses_must_list_every_sequence(tmp_path):
    words = ["x x", "x y", "y x", "y y"]
    ok = get_game({"responses": words, "strengths": A.tolist()})
    assert ok.length == 2 and ok.tokens == ("x", "y")
    with pytest.raises(ConfigError, match="every sequence of 2 words"):
        get_game({"responses": words[:3], "strengths": A[:3, :3].tolist()})


def test_the_game_model_is_built_from_the_definition_cached_and_starts_at_start(tmp_path):
    spec = f"builtin:game-{GAME}"
    folder = resolve_model_path(spec)
    assert resolve_model_path(spec) == folder and "game-cyclic4-" in folder  # cached by definition
    assert set(load_tokenizer(spec).get_vocab()) == {"red", "green", "blue", "gold"}
    module = lit_pref.SFT(tokenizer=spec)
    module.configure_model()
    pi = policy_distribution(module, "red", get_game(GAME).responses())
    assert pi == pytest.approx([0.4, 0.2, 0.1, 0.3], abs=1e-5)
    edited = tmp_path / "cyclic4.yaml"
    edited.write_text(json.dumps({**yaml.safe_load(Path(GAME).read_text()), "start": [0.25] * 4}))
    assert resolve_model_path(f"builtin:game-{edited}") != folder  # an edited definition rebuilds
    two = {"responses": ["x x", "x y", "y x", "y y"], "strengths": A.tolist(), "start": [0.1, 0.2, 0.3, 0.4]}
    with pytest.raises(ConfigError, match="one-word responses only"):
        get_game(two)


def test_oracle_and_metrics_take_the_same_definition():
    oracle = lit_pref.MatrixOracle(game=GAME)
    assert list(oracle.index) == ["red", "green", "blue", "gold"]
    P = oracle(["red"], [["gold", "blue", "red"]])[0]
    assert np.allclose(P.numpy(), [[0.5, 5 / 6, 1 / 3], [1 / 6, 0.5, 5 / 6], [2 / 3, 1 / 6, 0.5]])
    metrics = lit_pref.GameMetrics(game=GAME)
    assert metrics.nash == pytest.approx([1 / 2, 1 / 3, 1 / 6, 0], abs=1e-9)
    with pytest.raises(ConfigError, match="not both"):
        lit_pref.MatrixOracle(game=GAME, matrix=[[0.5]], responses=["red"])
    with pytest.raises(ConfigError, match="unknown game 'nope'"):
        lit_pref.GameMetrics(game="nope")


def run_mpo(alpha: float, refresh: int | None, iterations: int):
    pl.seed_everything(0, verbose=False)
    data = lit_pref.PreferenceDataModule(
        tokenizer=f"builtin:game-{GAME}", train=f"task:game-{GAME}", format="prompt", batch_size=1,
        max_length=4, max_prompt_length=1,
    )  # fmt: skip
    module = lit_pref.MPO(
        oracle=lit_pref.MatrixOracle(game=GAME), exact=True, eta=2.0, alpha=alpha,
        sampling=lit_pref.SamplingConfig(max_new_tokens=1), updates_per_rollout=10, lr=5e-2,
    )  # fmt: skip
    metrics = lit_pref.GameMetrics(game=GAME, every_n_steps=10)
    callbacks = [metrics] + ([lit_pref.MagnetUpdate(every_n_iterations=refresh)] if refresh else [])
    trainer(10 * iterations, callbacks, limit_val_batches=0).fit(module, data)
    return metrics.history


@pytest.mark.slow
def test_mpo_on_a_yaml_game_ends_well_below_the_fixed_magnet_plateau():
    # exact tabular MMD from the same start (eta 2, alpha 0.2): refresh every 10 -> gap 0.0069 after 100
    # iterations and ~1e-4 after 200; the fixed magnet's regularized equilibrium has gap 0.0709.
    game = get_game(GAME)
    mpo = run_mpo(0.2, 10, 200)
    fixed = run_mpo(0.2, None, 100)
    md = run_mpo(0.0, None, 100)
    assert mpo[0][3] == pytest.approx(game.start, abs=1e-5)  # the model starts at the game's start
    plateau = duality_gap(game.matrix, regularized_equilibrium(game.matrix, game.start, 0.2))
    print(
        f"gaps: MPO {mpo[-1][1]:.4f}, fixed magnet {fixed[-1][1]:.4f} (plateau {plateau:.4f}), alpha 0 {md[-1][1]:.4f}"
    )
    assert fixed[-1][1] == pytest.approx(plateau, abs=0.005)
    assert mpo[-1][1] < 0.2 * plateau  # well below: the refreshed magnet goes on to the true NE
    assert mpo[-1][3][3] < 0.01  # gold, outside the NE's support, is abandoned
    assert min(h[1] for h in md[-20:]) > plateau  # alpha = 0: the last iterate stays far from the NE
