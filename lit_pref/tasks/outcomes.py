"""`outcomes`: a randomized experiment over a finite set of texts with a known causal effect g(x).

The world is fixed (seeded once): `NUM_TEXTS` one-token texts `text00`..`text29`, their true effects g(x), the
randomization distribution P^R(x) the experiment assigned texts from, and a binary text feature c(x). Rows are
re-drawn per `seed`:

- randomized outcome rows (the default): X ~ P^R, Y = g(X) + N(0, noise^2), with the known `propensity` P^R(X);
- observational outcome rows (`assignment: observational`, for training a confounded outcome model): X uniform,
  and readers who read a text with c(x) = +1 were already more receptive, so Y = g(X) + confounding c(X) + noise
  and E[Y | X] = g(X) + confounding c(X) != g(X). P^R is unknown there (no propensity column).

c(x) is +1 on the texts ranked 4th to 15th by g and -1 elsewhere (the three best included): with confounding 0.5
an outcome model fit to observational data ranks a mediocre text first, the failure the CausalPO paper's
robustness study is about. `builtin:outcomes-base` is a language model over exactly these texts whose
distribution is P^R (the base model f0), so a policy's value V(pi) = sum_x pi(x) g(x) and its regret
max g - V(pi) are exact (`lit_pref.OutcomeRegret`). Mass on the start token, the only other token, counts as the
worst text.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from lit_pref.errors import DataError
from lit_pref.tasks.base import Task

NUM_TEXTS = 30
WORLD_SEED = 2402
START_TOKEN = "<s>"


class OutcomesTask(Task):
    """Randomized (or confounded observational) direct-outcome rows over 30 texts with known effects.

    Args:
        seed: Seed of the rows (train uses seed, val seed + 1, test seed + 2); the world itself is fixed.
        num_rows: Rows of the train split (val and test get a quarter).
        noise: Standard deviation of the outcome noise around the text's effect.
        assignment: randomized (X ~ P^R, with propensities) or observational (X uniform, confounded outcomes).
        confounding: Size of the confounded shift on observational rows (E[Y|X] = g(X) + confounding * c(X)).
        top_fraction: Keep only rows whose outcome is in this top fraction of their split (e.g. 0.25 for
            outcome-filtered SFT); 1 keeps all.
    """

    name = "outcomes"

    def __init__(
        self,
        seed: int = 0,
        num_rows: int = 2000,
        noise: float = 1.0,
        assignment: str = "randomized",
        confounding: float = 0.0,
        top_fraction: float = 1.0,
    ):
        if assignment not in ("randomized", "observational"):
            raise DataError(f"task option assignment must be randomized or observational, got {assignment!r}")
        if not 0 < top_fraction <= 1:
            raise DataError(f"task option top_fraction must be in (0, 1], got {top_fraction}")
        self.seed = seed
        self.num_rows = num_rows
        self.noise = noise
        self.assignment = assignment
        self.confounding = confounding
        self.top_fraction = top_fraction

    # -- the fixed world ------------------------------------------------------------------------------------
    @property
    def texts(self) -> list[str]:
        return [f"text{i:02d}" for i in range(NUM_TEXTS)]

    @cached_property
    def _world(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(WORLD_SEED)
        effects = rng.normal(0.0, 0.5, NUM_TEXTS)
        # The experiment showed good texts somewhat less often: the base model's regret is 1.23.
        logits = -0.6 * effects + rng.normal(0.0, 0.4, NUM_TEXTS)
        propensities = np.exp(logits) / np.exp(logits).sum()
        rank = np.argsort(np.argsort(-effects))  # 0 = best
        feature = np.where((rank >= 3) & (rank < 15), 1.0, -1.0)
        return effects, propensities, feature

    @property
    def effects(self) -> np.ndarray:
        """g(x) for every text, in `texts` order."""
        return self._world[0]

    @property
    def propensities(self) -> np.ndarray:
        """P^R(x): the randomization distribution of the experiment."""
        return self._world[1]

    @property
    def feature(self) -> np.ndarray:
        """c(x) in {-1, +1}: the text feature the observational confounding acts through."""
        return self._world[2]

    def value(self, pi: np.ndarray) -> float:
        """V(pi) = sum_x pi(x) g(x) for a distribution over the texts; missing mass counts as the worst text."""
        pi = np.asarray(pi, dtype=np.float64)
        return float(pi @ self.effects + max(1.0 - pi.sum(), 0.0) * self.effects.min())

    def regret(self, pi: np.ndarray) -> float:
        """max_x g(x) - V(pi)."""
        return float(self.effects.max() - self.value(pi))

    # -- rows ------------------------------------------------------------------------------------------------
    def rows(self, row_format: str, split: str) -> list[dict]:
        offsets = {"train": 0, "val": 1, "test": 2}
        if split not in offsets:
            raise DataError(f"task:outcomes has splits train, val and test, not {split!r}")
        if row_format == "prompt":
            return [{"prompt": START_TOKEN} for _ in range(self._size(split))]
        if row_format != "outcome":
            raise DataError(
                "task:outcomes has outcome rows (and prompt rows for sampling): set data.format: outcome"
            )
        rng = np.random.default_rng([self.seed, offsets[split]])
        n = self._size(split)
        observational = self.assignment == "observational"
        assign = np.full(NUM_TEXTS, 1.0 / NUM_TEXTS) if observational else self.propensities
        chosen = rng.choice(NUM_TEXTS, size=n, p=assign)
        shift = self.confounding * self.feature[chosen] if observational else 0.0
        outcomes = self.effects[chosen] + shift + rng.normal(0.0, self.noise, n)
        rows = []
        for k, y in zip(chosen, outcomes):
            row = {"text": self.texts[k], "outcome": float(y)}
            if not observational:
                row["propensity"] = float(self.propensities[k])
            rows.append(row)
        if self.top_fraction < 1:
            cutoff = np.quantile(outcomes, 1 - self.top_fraction)
            rows = [r for r in rows if r["outcome"] >= cutoff]
        return rows

    def _size(self, split: str) -> int:
        return self.num_rows if split == "train" else max(self.num_rows // 4, 32)

    def reward(self, prompts: list[str], responses: list[str]) -> list[float]:
        index = {t: i for i, t in enumerate(self.texts)}
        unknown = [r for r in responses if r.strip() not in index]
        if unknown:
            raise DataError(f"task:outcomes scores its own texts only; got {unknown[0]!r}")
        return [float(self.effects[index[r.strip()]]) for r in responses]
