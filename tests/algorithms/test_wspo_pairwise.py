"""WSPO level pairwise: the loss by hand, pairing of demonstration rows, and the exact target pi* on an
enumerable bandit whose normalizer Z(x) is far from 1 (where the sequence level provably misses pi*)."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import lambertw

import lit_pref
from lit_pref.callbacks.game import policy_distribution
from lit_pref.errors import ConfigError, DataError
from tests.conftest import write_jsonl
from tests.helpers import trainer

WORDS = ["a", "b", "c", "d"]
P_STRONG = np.array([0.3, 0.3, 0.2, 0.2])  # pi_ref^s
P_WEAK = np.array([0.1, 0.2, 0.3, 0.4])  # pi_ref^w
P_ALIGNED = np.array([0.3, 0.3, 0.2, 0.2])  # pi_r^w


def test_average_is_refused_with_the_pairwise_level():
    with pytest.raises(ConfigError, match="average"):
        lit_pref.WSPO(
            weak_reference="builtin:tiny", weak_aligned="builtin:tiny", level="pairwise", average=True
        )


def game_model(tmp_path, name: str, start: np.ndarray) -> str:
    """A model over exactly the words a-d whose distribution after the prompt 'a' is `start` (a YAML game)."""
    path = tmp_path / f"{name}.yaml"
    definition = {"name": name, "responses": WORDS, "matrix": [[0.5] * 4] * 4, "start": start.tolist()}
    path.write_text(json.dumps(definition))
    return f"builtin:game-{path}"


def distribution(module) -> np.ndarray:
    return policy_distribution(module, "a", WORDS)


def ideal(gamma: float) -> tuple[np.ndarray, float]:
    unnormalized = P_STRONG * (P_ALIGNED / P_WEAK) ** (1 / gamma)
    return unnormalized / unnormalized.sum(), float(unnormalized.sum())


def sequence_minimizer(gamma: float, weights: np.ndarray) -> np.ndarray:
    """argmin over the simplex of sum_y w_y (log pi_y - log(Z pi*_y))^2 (the sequence level's optimum): the
    stationarity condition log pi_y = t_y - mu pi_y / w_y gives pi_y = exp(t_y - W(mu exp(t_y) / w_y))."""
    target, z = ideal(gamma)
    t = np.log(z * target)

    def pi(mu):
        return np.exp(t - lambertw(mu * np.exp(t) / weights).real)

    mu = brentq(lambda m: pi(m).sum() - 1, 0.0, 1e3) if z > 1 else 0.0
    return pi(mu)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * np.log(p / q)).sum())


def bandit(tmp_path, level: str, gamma: float, pairwise_rows: bool = False, steps: int = 400):
    strong = game_model(tmp_path, "strong", P_STRONG)
    weak_ref, weak_aligned = (
        game_model(tmp_path, "weak_ref", P_WEAK),
        game_model(tmp_path, "weak_al", P_ALIGNED),
    )
    if pairwise_rows:  # every pair of distinct responses once
        rows = [
            {"prompt": "a", "chosen": x, "rejected": y} for i, x in enumerate(WORDS) for y in WORDS[i + 1 :]
        ]
    else:  # demonstrations: each response once (the pairwise level pairs them by prompt)
        rows = [{"prompt": "a", "response": r} for r in WORDS]
    data = lit_pref.PreferenceDataModule(
        tokenizer=strong, train=write_jsonl(tmp_path / "bandit.jsonl", rows), batch_size=len(rows) if level != "pairwise" or pairwise_rows else 6,
        shuffle=False, max_length=2, max_prompt_length=1,
    )  # fmt: skip
    pl.seed_everything(0, verbose=False)
    module = lit_pref.WSPO(
        policy=strong, weak_reference=weak_ref, weak_aligned=weak_aligned, gamma=gamma, level=level, lr=2e-2,
        reference=lit_pref.FrozenCopy(model=strong),
    )  # fmt: skip
    trainer(steps, limit_val_batches=0).fit(module, data)
    return module, data


@pytest.mark.slow
@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_pairwise_level_reaches_the_ideal_target_where_the_sequence_level_does_not(tmp_path, gamma):
    target, z = ideal(gamma)
    assert z > 1.5  # far from 1: Z = 1.58 (gamma 1), 3.51 (gamma 0.5)
    pairwise, data = bandit(tmp_path, "pairwise", gamma)
    assert data.row_format == "pairwise" and len(data.datasets["train"]) == 6  # 4 responses -> 6 pairs
    start = P_STRONG  # the strong reference and starting policy (the game model is fitted to it exactly)
    learned = distribution(pairwise)
    kl_pairwise = kl(target, learned)
    sequence, _ = bandit(tmp_path, "sequence", gamma)
    learned_sequence = distribution(sequence)
    kl_sequence = kl(target, learned_sequence)
    predicted = sequence_minimizer(gamma, np.full(4, 0.25))
    print(
        f"gamma {gamma}: Z = {z:.3f}; KL(pi* || start) {kl(target, start):.4f}; KL(pi* || pairwise) {kl_pairwise:.2e}; "
        f"KL(pi* || sequence) {kl_sequence:.4f}; KL(predicted sequence minimizer || sequence) "
        f"{kl(predicted, learned_sequence):.2e}"
    )
    assert kl_pairwise < 1e-3
    assert kl_sequence > 0.01 and kl_sequence > 20 * kl_pairwise  # the sequence level misses pi* ...
    assert kl(predicted, learned_sequence) < 1e-3  # ... and sits at its own documented minimizer
    assert kl(target, predicted) == pytest.approx(kl_sequence, abs=5e-3)


@pytest.mark.slow
def test_pairwise_rows_and_cached_weak_logps(tmp_path):
    """Preference pairs give the pairs directly (labels unused); the weak log-probs come from the cache."""
    from lit_pref.models.artifacts import cache_root

    before = set((cache_root() / "logps").glob("*.pt"))
    module, data = bandit(tmp_path, "pairwise", 0.5, pairwise_rows=True, steps=300)
    assert (
        len(set((cache_root() / "logps").glob("*.pt")) - before) == 2
    )  # weak reference + weak aligned, train
    assert isinstance(module.weak_aligned, lit_pref.Precomputed)
    target, _ = ideal(0.5)
    assert kl(target, distribution(module)) < 1e-3


def test_a_prompt_with_one_response_cannot_be_paired(tmp_path):
    rows = [
        {"prompt": "a", "response": "b"},
        {"prompt": "a", "response": "c"},
        {"prompt": "b", "response": "d"},
    ]
    strong = game_model(tmp_path, "strong", P_STRONG)
    path = write_jsonl(tmp_path / "single.jsonl", rows)
    data = lit_pref.PreferenceDataModule(
        tokenizer=strong, train=path, batch_size=1, max_length=2, max_prompt_length=1
    )
    module = lit_pref.WSPO(policy=strong, weak_reference=strong, weak_aligned=strong, level="pairwise")
    with pytest.raises(DataError, match=r"single.jsonl: row 2 is the only response to its prompt"):
        trainer(1).fit(module, data)
