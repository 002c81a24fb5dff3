"""Preference games with enumerable responses and exact ground truth (Nash equilibrium, duality gap).

A game has one prompt token and responses of `length` tokens from a small token set, so the policy's whole
distribution over responses can be computed from its log-probs. The game's tokenizer has exactly the
response tokens as its vocabulary (no EOS: every response has `length` tokens), so those probabilities sum to 1
and the policy trained by lit_pref is exactly the tabular policy of the game-theory statements.

Conventions (ALGORITHMS.md, MPO): P[i, j] = P(y_i > y_j), P + P^T = 1; P(y > pi) = sum_j pi_j P[y, j];
duality gap DG(pi) = 2 max_y P(y > pi) - 1 (>= 0, zero exactly at the Nash equilibrium).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from lit_pref.errors import ConfigError, DataError
from lit_pref.tasks.base import Task


def check_preference_matrix(P: np.ndarray, name: str = "preference matrix") -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ConfigError(f"{name} must be square, got shape {P.shape}")
    if ((P < 0) | (P > 1)).any():
        raise ConfigError(f"{name} entries are probabilities: all must be in [0, 1]")
    bad = np.argwhere(np.abs(P + P.T - 1) > 1e-9)
    if len(bad):
        i, j = bad[0]
        raise ConfigError(
            f"{name} must satisfy P + P^T = 1 (P[i, j] = P(y_i > y_j)): P[{i},{j}] + P[{j},{i}] = "
            f"{P[i, j] + P[j, i]:.6g}. Fix the entries (diagonal entries are 1/2)"
        )
    return P


def nash_equilibrium(P: np.ndarray, tol: float = 1e-9) -> np.ndarray:
    """The symmetric Nash equilibrium of the symmetric constant-sum game P, by support enumeration.

    A = P - 1/2 is antisymmetric, so the game's value is 0 and pi is an equilibrium iff A pi <= 0 (no response
    beats pi on average). Supports are tried smallest first; for games with a unique equilibrium (generic
    games) the first valid one is it. Exact up to floating point; fine for the small games here (n <= 16).
    """
    A = check_preference_matrix(P) - 0.5
    n = len(A)
    if n > 16:
        raise ConfigError(f"nash_equilibrium enumerates supports: {n} responses is too many (at most 16)")
    for size in range(1, n + 1):
        for support in itertools.combinations(range(n), size):
            idx = list(support)
            # A_SS x = 0 on the support, sum x = 1
            M = np.vstack([A[np.ix_(idx, idx)], np.ones(size)])
            rhs = np.concatenate([np.zeros(size), [1.0]])
            x, *_ = np.linalg.lstsq(M, rhs, rcond=None)
            if np.abs(M @ x - rhs).max() > 1e-7 or (x < -tol).any():
                continue
            pi = np.zeros(n)
            pi[idx] = np.clip(x, 0, None)
            pi /= pi.sum()
            if (A @ pi <= 1e-7).all():
                return pi
    raise ConfigError("no Nash equilibrium found (the matrix is not a valid preference matrix?)")


def win_rates(P: np.ndarray, pi: np.ndarray) -> np.ndarray:
    """P(y > pi) for every response y."""
    return P @ pi


def duality_gap(P: np.ndarray, pi: np.ndarray) -> float:
    return float(2 * win_rates(P, pi).max() - 1)


def mmd_step(P: np.ndarray, pi: np.ndarray, magnet: np.ndarray, eta: float, alpha: float) -> np.ndarray:
    """Exact magnetic mirror descent step (closed form):
    (1 + eta alpha) log pi' = log pi + eta alpha log magnet + eta P(y > pi) + c."""
    logits = (np.log(pi) + eta * alpha * np.log(magnet) + eta * win_rates(P, pi)) / (1 + eta * alpha)
    logits -= logits.max()
    out = np.exp(logits)
    return out / out.sum()


def regularized_equilibrium(
    P: np.ndarray, magnet: np.ndarray, alpha: float, iters: int = 20000
) -> np.ndarray:
    """NE of the KL-regularized game: pi ∝ magnet exp(P(y > pi) / alpha), by damped fixed-point iteration."""
    pi = magnet.copy()
    for _ in range(iters):
        target = magnet * np.exp((win_rates(P, pi) - win_rates(P, pi).max()) / alpha)
        pi = 0.9 * pi + 0.1 * target / target.sum()
    return pi


@dataclass
class PreferenceGame(Task):
    """A symmetric preference game over all `length`-token responses from `tokens`.

    The prompt is `tokens[0]` (one token). `matrix[i][j]` = P(response_i > response_j), responses ordered as
    `itertools.product(tokens, repeat=length)`.
    """

    name: str
    tokens: tuple[str, ...]
    length: int
    matrix: np.ndarray
    num_rows: int = 256

    def __post_init__(self):
        self.matrix = check_preference_matrix(self.matrix, f"game {self.name}")
        if len(self.matrix) != len(self.tokens) ** self.length:
            raise ConfigError(
                f"game {self.name}: the matrix must have one row per response ({len(self.tokens)}^{self.length})"
            )

    @property
    def prompt(self) -> str:
        return self.tokens[0]

    def responses(self) -> list[str]:
        return [" ".join(r) for r in itertools.product(self.tokens, repeat=self.length)]

    def nash(self) -> np.ndarray:
        return nash_equilibrium(self.matrix)

    def rows(self, row_format: str, split: str) -> list[dict]:
        if row_format != "prompt":
            raise DataError(f"task:game-{self.name} has prompt rows only (set data.format: prompt)")
        return [{"prompt": self.prompt} for _ in range(self.num_rows)]

    def reward(self, prompts, responses):
        raise ConfigError(
            f"game {self.name} has no scalar reward: use its preference matrix (lit_pref.MatrixOracle)"
        )


def cyclic3() -> np.ndarray:
    """ALGORITHMS.md's example: 3 responses, P = 1/2 + A/6, a12 = 1, a13 = -2, a23 = 3; NE = (1/2, 1/3, 1/6)."""
    A = np.array([[0, 1, -2], [-1, 0, 3], [2, -3, 0]], dtype=np.float64)
    return 0.5 + A / 6


def cyclic9(seed: int = 0) -> np.ndarray:
    """9 two-token responses: a cycle over the first token (unequal strengths) plus seeded antisymmetric noise,
    so the game is non-transitive with an interior-ish equilibrium."""
    rng = np.random.default_rng(seed)
    first = np.array([[0, 1, -2], [-1, 0, 3], [2, -3, 0]], dtype=np.float64)
    A = np.kron(first, np.ones((3, 3))) + rng.normal(0, 0.7, (9, 9))
    A = np.triu(A, 1) - np.triu(A, 1).T
    return 0.5 + A / (2 * np.abs(A).max())


GAMES = {
    "cyclic3": lambda **kw: PreferenceGame("cyclic3", ("a", "b", "c"), 1, cyclic3(), **kw),
    "cyclic9": lambda **kw: PreferenceGame("cyclic9", ("a", "b", "c"), 2, cyclic9(), **kw),
}


def get_game(name: str, **options) -> PreferenceGame:
    if name not in GAMES:
        raise ConfigError(f"unknown game {name!r}: the games are {sorted(GAMES)}")
    return GAMES[name](**options)
