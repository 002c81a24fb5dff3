"""Preference oracles: P(y_i > y_j | x) for groups of responses to the same prompt.

An oracle is called with the prompts (B) and, per prompt, K response texts; it returns a (B, K, K) tensor with
P[b, i, j] = P(y_i > y_j | x_b) and P + P^T = 1 (the diagonal is 1/2). In YAML, by class path:

    oracle: {class_path: lit_pref.MatrixOracle, init_args: {game: cyclic3}}
    oracle: {class_path: lit_pref.MatrixOracle, init_args: {game: configs/games/cyclic4.yaml}}
    oracle: {class_path: lit_pref.BradleyTerryOracle, init_args: {reward: {class_path: lit_pref.TaskReward}, tau: 0.1}}
    oracle: {class_path: lit_pref.CyclicStyleOracle, init_args: {reward: {class_path: lit_pref.TaskReward}}}
    oracle: {class_path: lit_pref.CallableOracle, init_args: {function: my_pkg.prefs:prob}}
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_pref.errors import ConfigError, check_range
from lit_pref.imports import import_callable
from lit_pref.rewards import Reward
from lit_pref.tasks.games import check_preference_matrix, get_game


class PreferenceOracle:
    """Base class. `responses[b]` holds the K response texts of prompt b."""

    def __call__(self, prompts: list[Any], responses: list[list[str]]) -> Tensor:
        raise NotImplementedError


class MatrixOracle(PreferenceOracle):
    """A preference matrix over enumerable responses: a game (built-in or your own), or a matrix + responses.

    Args:
        game: A game: a built-in name (cyclic3, cyclic9), the path of a YAML file defining one (responses, matrix
            or skew-symmetric strengths, optional start; see docs/games.md), or that definition inline.
        matrix: Your own P (P[i][j] = P(response_i > response_j), P + P^T = 1), with `responses` (no game model
            or metrics; prefer `game`).
        responses: Response texts indexing `matrix`.
    """

    def __init__(
        self,
        game: str | dict[str, Any] | None = None,
        matrix: list[list[float]] | None = None,
        responses: list[str] | None = None,
    ):
        if game is not None:
            if matrix is not None or responses is not None:
                raise ConfigError("MatrixOracle: give either `game` or `matrix` + `responses`, not both")
            g = get_game(game)
            matrix, responses = g.matrix, g.responses()
        if matrix is None or responses is None:
            raise ConfigError("MatrixOracle needs `game`, or both `matrix` and `responses`")
        self.matrix = torch.tensor(check_preference_matrix(np.asarray(matrix), "MatrixOracle.matrix"))
        if len(responses) != len(self.matrix):
            raise ConfigError(
                f"MatrixOracle: {len(responses)} responses for a {len(self.matrix)}x{len(self.matrix)} matrix"
            )
        self.index = {" ".join(r.split()): i for i, r in enumerate(responses)}

    def indices(self, texts: list[str]) -> list[int]:
        try:
            return [self.index[" ".join(t.split())] for t in texts]
        except KeyError as exc:
            raise ConfigError(
                f"MatrixOracle: response {exc.args[0]!r} is not one of the game's responses"
            ) from exc

    def __call__(self, prompts, responses):
        return torch.stack(
            [self.matrix[self.indices(group)][:, self.indices(group)] for group in responses]
        ).float()


class BradleyTerryOracle(PreferenceOracle):
    """P(y_i > y_j) = sigma((r_i - r_j) / tau) from any reward (task reward, reward model, callable).

    Args:
        reward: The reward.
        tau: Temperature: smaller makes preferences sharper.
    """

    def __init__(self, reward: Reward, tau: float = 1.0):
        check_range(f"{type(self).__name__}.tau", tau, gt=0)
        self.reward = reward
        self.tau = tau

    def scores(self, prompts, responses) -> Tensor:
        flat_prompts = [p for p, group in zip(prompts, responses) for _ in group]
        flat = [r for group in responses for r in group]
        return self.reward(flat_prompts, flat).view(len(responses), -1)

    def __call__(self, prompts, responses):
        r = self.scores(prompts, responses)
        return torch.sigmoid((r[:, :, None] - r[:, None, :]) / self.tau)


class CyclicStyleOracle(BradleyTerryOracle):
    """A non-transitive preference for language tasks: Bradley-Terry on a reward plus a rock-paper-scissors
    term over a response's "style", here its word count modulo 3:

        P(y_i > y_j) = sigma((r_i - r_j) / tau + weight * C[s_i, s_j]),  C[0,1] = C[1,2] = C[2,0] = 1 (antisymmetric)

    No scalar reward explains it, so a Bradley-Terry solution and the Nash solution differ.

    Args:
        reward: The reward of the transitive part.
        tau: Temperature of the reward term.
        weight: Strength of the cyclic style term.
    """

    CYCLE = torch.tensor([[0.0, 1.0, -1.0], [-1.0, 0.0, 1.0], [1.0, -1.0, 0.0]])

    def __init__(self, reward: Reward, tau: float = 1.0, weight: float = 1.0):
        super().__init__(reward, tau)
        check_range("CyclicStyleOracle.weight", weight, ge=0)
        self.weight = weight

    def __call__(self, prompts, responses):
        r = self.scores(prompts, responses)
        styles = torch.tensor([[len(t.split()) % 3 for t in group] for group in responses])
        cyclic = self.CYCLE[styles[:, :, None], styles[:, None, :]]
        return torch.sigmoid((r[:, :, None] - r[:, None, :]) / self.tau + self.weight * cyclic)


class CallableOracle(PreferenceOracle):
    """Your function `fn(prompts, responses_a, responses_b) -> list[float]` of P(a > b) for flat, aligned lists.

    Only the pairs i < j are asked; P[j, i] = 1 - P[i, j] and the diagonal is 1/2.

    This imports and runs your code (the module named in `function`) with the training process's rights:
    only point it at code you trust.

    Args:
        function: 'package.module:function'.
    """

    def __init__(self, function: str):
        self.fn = import_callable(function, "CallableOracle.function")

    def __call__(self, prompts, responses):
        k = len(responses[0])
        pairs = [(b, i, j) for b in range(len(responses)) for i in range(k) for j in range(i + 1, k)]
        probs = self.fn(
            [prompts[b] for b, _, _ in pairs],
            [responses[b][i] for b, i, _ in pairs],
            [responses[b][j] for b, _, j in pairs],
        )
        P = torch.full((len(responses), k, k), 0.5)
        for (b, i, j), p in zip(pairs, probs):
            P[b, i, j], P[b, j, i] = float(p), 1.0 - float(p)
        return P
