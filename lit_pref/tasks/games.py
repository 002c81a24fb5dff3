"""Preference games with enumerable responses and exact ground truth (Nash equilibrium, duality gap).

A game has one prompt token and responses of `length` tokens from a small token set, so the policy's whole
distribution over responses can be computed from its log-probs. The game's tokenizer has exactly the
response tokens as its vocabulary (no EOS: every response has `length` tokens), so those probabilities sum to 1
and the policy trained by lit_pref is exactly the tabular policy of the game-theory statements.

Conventions (ALGORITHMS.md, MPO): P[i, j] = P(y_i > y_j), P + P^T = 1; P(y > pi) = sum_j pi_j P[y, j];
duality gap DG(pi) = 2 max_y P(y > pi) - 1 (>= 0, zero exactly at the Nash equilibrium).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def nash_equilibrium(P: np.ndarray) -> np.ndarray:
    """A symmetric Nash equilibrium of the symmetric constant-sum game P, by linear programming.

    A = P - 1/2 is antisymmetric, so the game's value is 0 and pi is an equilibrium iff A pi <= 0 (no response
    beats pi on average). The LP maximizes v subject to A pi + v <= 0, sum pi = 1, pi >= 0 (scipy's HiGHS
    solver); its optimum has v = 0 and pi an equilibrium. For games with several equilibria it returns one of
    them (a vertex of the equilibrium set).
    """
    from scipy.optimize import linprog

    A = check_preference_matrix(P) - 0.5
    n = len(A)
    cost = np.zeros(n + 1)
    cost[-1] = -1.0  # maximize v
    result = linprog(
        cost,
        A_ub=np.hstack([A, np.ones((n, 1))]),
        b_ub=np.zeros(n),
        A_eq=np.hstack([np.ones((1, n)), np.zeros((1, 1))]),
        b_eq=np.ones(1),
        bounds=[(0, None)] * n + [(None, None)],
        method="highs",
    )
    if result.status != 0:
        raise ConfigError(
            f"the Nash equilibrium LP failed ({result.message}); is the matrix a preference matrix?"
        )
    pi = np.clip(result.x[:n], 0, None)
    return pi / pi.sum()


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


def _normalized(logits: np.ndarray) -> np.ndarray:
    out = np.exp(logits - logits.max())
    return out / out.sum()


def sppo_step(P: np.ndarray, pi: np.ndarray, eta: float) -> np.ndarray:
    """The exact minimizer of SPPO's loss on a game: pi' = argmin sum_y pi(y) (log pi'(y)/pi(y) - eta (P(y > pi) -
    1/2))^2 over distributions pi'. With u = log pi'/pi and v = eta (P(y > pi) - 1/2) the optimality conditions are
    u_y + c e^(u_y) = v_y with c >= 0 setting sum pi e^u = 1, so u_y = v_y - W(c e^(v_y)) (Lambert W) and
    pi' = pi W(c e^v) / c; c is found by root finding. (Not the multiplicative-weights step pi exp(eta P) / Z:
    eta / 2 only approximates log Z.)"""
    from scipy.optimize import brentq
    from scipy.special import lambertw

    v = eta * (win_rates(P, pi) - 0.5)
    if abs(float(pi @ np.exp(v)) - 1) < 1e-15:
        return pi * np.exp(v)
    mass = lambda c: float(pi @ lambertw(c * np.exp(v)).real) / c - 1  # noqa: E731
    hi = 1.0
    while mass(hi) > 0:
        hi *= 2
    c = brentq(mass, 1e-12, hi, xtol=1e-15, rtol=1e-15)
    out = pi * lambertw(c * np.exp(v)).real / c
    return out / out.sum()


def geometric_mixture(pi: np.ndarray, mu: np.ndarray, weight: float) -> np.ndarray:
    """pi^(1 - weight) mu^weight, normalized (Nash-MD's opponent with weight = eta tau)."""
    return _normalized((1 - weight) * np.log(pi) + weight * np.log(mu))


def nash_md_step(P: np.ndarray, pi: np.ndarray, mu: np.ndarray, eta: float, tau: float) -> np.ndarray:
    """Exact Nash-MD step: pi' ∝ pi_mu exp(eta P(y > pi_mu)), with pi_mu = geometric_mixture(pi, mu, eta tau)."""
    mixture = geometric_mixture(pi, mu, eta * tau)
    return _normalized(np.log(mixture) + eta * win_rates(P, mixture))


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

    The prompt is `tokens[0]` (one token) unless `prompt` names another token. `matrix[i][j]` =
    P(response_i > response_j), responses ordered as `itertools.product(tokens, repeat=length)` or, for a game
    defined in YAML, as its `responses` list (`response_texts`). `start`, if set, is the distribution over the
    responses that the game's model starts from (its built-in model is fitted to it exactly).
    """

    name: str
    tokens: tuple[str, ...]
    length: int
    matrix: np.ndarray
    num_rows: int = 256
    start: np.ndarray | None = None
    response_texts: tuple[str, ...] | None = None
    prompt_token: str | None = None
    #: where a user-defined game came from (a file path or "inline"), for messages and the model cache key
    source: str | None = None

    def __post_init__(self):
        self.matrix = check_preference_matrix(self.matrix, f"game {self.name}")
        if len(self.matrix) != len(self.tokens) ** self.length:
            raise ConfigError(
                f"game {self.name}: the matrix must have one row per response ({len(self.tokens)}^{self.length})"
            )

    @property
    def prompt(self) -> str:
        return self.prompt_token or self.tokens[0]

    def responses(self) -> list[str]:
        if self.response_texts is not None:
            return list(self.response_texts)
        return [" ".join(r) for r in itertools.product(self.tokens, repeat=self.length)]

    def nash(self) -> np.ndarray:
        return nash_equilibrium(self.matrix)

    def model_key(self) -> str:
        """What the game's model depends on (vocabulary, prompt, response order, start), hashed."""
        start = None if self.start is None else [round(float(v), 12) for v in self.start]
        payload = json.dumps([list(self.tokens), self.length, self.responses(), self.prompt, start])
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def rows(self, row_format: str, split: str) -> list[dict]:
        if row_format != "prompt":
            raise DataError(f"task:game-{self.name} has prompt rows only (set data.format: prompt)")
        return [{"prompt": self.prompt} for _ in range(self.num_rows)]

    def reward(self, prompts, responses):
        raise ConfigError(
            f"game {self.name} has no scalar reward: use its preference matrix (lit_pref.MatrixOracle)"
        )


GAME_KEYS = ("name", "responses", "matrix", "strengths", "scale", "start", "prompt", "num_rows")


def _matrix_option(value: Any, where: str, key: str, n: int) -> np.ndarray:
    try:
        M = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: `{key}` must be a {n}x{n} list of lists of numbers ({exc})") from exc
    if M.shape != (n, n):
        raise ConfigError(
            f"{where}: `{key}` must be {n}x{n} (one row and column per response), got shape {M.shape}"
        )
    if not np.isfinite(M).all():
        raise ConfigError(f"{where}: `{key}` has a non-finite entry")
    return M


def game_from_definition(
    definition: dict[str, Any], source: str = "inline", **options: Any
) -> PreferenceGame:
    """Build a game from its YAML/dict definition:

        name: rps4                               # optional (default: the file's stem, or "custom")
        responses: [rock, paper, scissors, well] # one word each, or several words each: then every sequence
                                                 # of that many words over the words used must be listed
        matrix: [[0.5, ...], ...]                # P[i][j] = P(response_i > response_j), P + P^T = 1
        strengths: [[0, 1, ...], ...]            # or a skew-symmetric A: P = 1/2 + A / (2 scale)
        scale: 3                                 # with strengths (default max |A|, so P spans [0, 1])
        start: [0.4, 0.3, 0.2, 0.1]              # optional start distribution of the game's model (all > 0;
                                                 # one-word responses only)
        prompt: rock                             # optional prompt word (one of the words; default the first)

    `options` (e.g. num_rows from data.task_options) override the definition's values. Errors name `source`.
    """
    where = f"game definition {source}"
    if not isinstance(definition, dict):
        raise ConfigError(f"{where}: expected a mapping with `responses` and `matrix` (or `strengths`)")
    definition = {**definition, **options}
    unknown = sorted(set(definition) - set(GAME_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; the keys are {list(GAME_KEYS)}")
    texts, tokens, length = _responses(definition.get("responses"), where)
    P = check_preference_matrix(_game_matrix(definition, where, len(texts)), f"{where}: `matrix`")
    start = _start(definition.get("start"), where, len(texts), length)
    prompt = definition.get("prompt")
    if prompt is not None and prompt not in tokens:
        raise ConfigError(
            f"{where}: `prompt` {prompt!r} must be one of the game's words {list(tokens)} (the game's model "
            "knows no other token)"
        )
    name = definition.get("name") or (Path(source).stem if source != "inline" else "custom")
    return PreferenceGame(
        name=str(name),
        tokens=tokens,
        length=length,
        matrix=P,
        num_rows=int(definition.get("num_rows", 256)),
        start=start,
        response_texts=tuple(texts),
        prompt_token=prompt,
        source=source,
    )


def _responses(responses: Any, where: str) -> tuple[list[str], tuple[str, ...], int]:
    """A definition's `responses` -> (response texts, the words used in first-seen order, words per response)."""
    if (
        not isinstance(responses, list)
        or len(responses) < 2
        or not all(isinstance(r, str) for r in responses)
    ):
        raise ConfigError(f"{where}: `responses` must be a list of at least 2 strings")
    words = [r.split() for r in responses]
    if any(not w for w in words):
        raise ConfigError(f"{where}: `responses` has an empty response")
    texts = [" ".join(w) for w in words]
    if len(set(texts)) != len(texts):
        raise ConfigError(f"{where}: `responses` has duplicates")
    length = len(words[0])
    if any(len(w) != length for w in words):
        raise ConfigError(
            f"{where}: every response must have the same number of words (responses have no end token, so "
            "the model's probabilities sum to 1 only over responses of one length)"
        )
    tokens = tuple(dict.fromkeys(t for w in words for t in w))
    if length > 1:
        every = {" ".join(p) for p in itertools.product(tokens, repeat=length)}
        if every != set(texts):
            missing = sorted(every - set(texts))[:5]
            raise ConfigError(
                f"{where}: responses of {length} words must list every sequence of {length} words over the words "
                f"used ({len(every)} responses), so the model's probabilities over them sum to 1; missing e.g. "
                f"{missing}. Use one word per response, or list them all"
            )
    return texts, tokens, length


def _game_matrix(definition: dict[str, Any], where: str, n: int) -> np.ndarray:
    """P from `matrix`, or from skew-symmetric `strengths` A and `scale` as P = 1/2 + A / (2 scale)."""
    if ("matrix" in definition) == ("strengths" in definition):
        raise ConfigError(
            f"{where}: give exactly one of `matrix` (probabilities) and `strengths` (skew-symmetric)"
        )
    if "matrix" in definition:
        if "scale" in definition:
            raise ConfigError(f"{where}: `scale` applies to `strengths` only")
        return _matrix_option(definition["matrix"], where, "matrix", n)
    A = _matrix_option(definition["strengths"], where, "strengths", n)
    if np.abs(A + A.T).max() > 1e-9:
        i, j = np.argwhere(np.abs(A + A.T) > 1e-9)[0]
        raise ConfigError(f"{where}: `strengths` must be skew-symmetric, but A[{i}][{j}] != -A[{j}][{i}]")
    scale = definition.get("scale", float(np.abs(A).max()) or 1.0)
    if not isinstance(scale, int | float) or scale < np.abs(A).max() or scale <= 0:
        raise ConfigError(f"{where}: `scale` must be >= max |A| = {np.abs(A).max():g} so that P is in [0, 1]")
    return 0.5 + A / (2 * scale)


def _start(start: Any, where: str, n: int, length: int) -> np.ndarray | None:
    """The optional start distribution of the game's model: n positive probabilities (one-word responses)."""
    if start is None:
        return None
    start = np.asarray(start, dtype=np.float64)
    if start.shape != (n,) or not np.isfinite(start).all() or (start <= 0).any():
        raise ConfigError(f"{where}: `start` must be {n} positive probabilities, one per response")
    if abs(start.sum() - 1) > 1e-6:
        raise ConfigError(f"{where}: `start` must sum to 1, it sums to {start.sum():.6g}")
    if length > 1:
        raise ConfigError(
            f"{where}: `start` is supported for one-word responses only (the game's model is fitted to it through "
            "its output layer); drop `start` or use one word per response"
        )
    return start / start.sum()


def read_game_file(path: str | Path, **options: Any) -> PreferenceGame:
    """A game from a YAML (or JSON) file holding its definition (see game_from_definition)."""
    import yaml

    path = Path(path)
    try:
        definition = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read game definition {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"game definition {path} is not valid YAML: {exc}") from exc
    return game_from_definition(definition, str(path), **options)


def is_game_file(spec: str) -> bool:
    return spec.endswith((".yaml", ".yml", ".json")) or Path(spec).is_file()


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


def get_game(name: str | dict | PreferenceGame, **options) -> PreferenceGame:
    """A game from a built-in name (cyclic3, cyclic9), a YAML file path, or a definition dict."""
    if isinstance(name, PreferenceGame):
        return name
    if isinstance(name, dict):
        return game_from_definition(name, "inline", **options)
    if name in GAMES:
        return GAMES[name](**options)
    if is_game_file(name):
        return read_game_file(name, **options)
    raise ConfigError(
        f"unknown game {name!r}: give a built-in game {sorted(GAMES)}, the path of a YAML file defining one "
        "(responses, matrix or strengths, optional start), or such a definition inline"
    )
