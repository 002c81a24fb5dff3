"""Rewards: anything that scores (prompt, response) texts, batched. Used by evaluation callbacks and methods.

A reward is a callable `reward(prompts, responses) -> torch.Tensor` of shape (N,). Prompts are strings or
message lists (as in the data), responses are strings. In YAML, give one by class_path:

    reward: {class_path: lit_pref.TaskReward, init_args: {task: reviews}}
    reward: {class_path: lit_pref.RewardModelScorer, init_args: {path: runs/reward_model/version_0/export}}
    reward: {class_path: lit_pref.CallableReward, init_args: {function: my_pkg.rewards:score}}
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from lit_pref.errors import check_range
from lit_pref.imports import import_callable


class Reward:
    """Base class: score a batch of (prompt, response) pairs."""

    def __call__(self, prompts: list[Any], responses: list[str]) -> Tensor:
        raise NotImplementedError

    def scores(self, prompts: list[Any], responses: list[str]) -> list[float]:
        """The scores as Python floats at the precision they were computed in (the tensor of `__call__` is float32
        for training; data written to files, e.g. by `sample`, keeps the full value)."""
        return [float(v) for v in self(prompts, responses)]


class TaskReward(Reward):
    """The ground-truth reward of a built-in task.

    Args:
        task: Task name (see lit_pref.tasks.TASKS).
        options: Task options that change the reward (e.g. {length_coef: 0.01}).
    """

    def __init__(self, task: str = "reviews", options: dict[str, Any] | None = None):
        from lit_pref.tasks import get_task

        self.task = get_task(task, options)

    def __call__(self, prompts, responses):
        return torch.tensor(self.task.reward(prompts, responses), dtype=torch.float32)

    def scores(self, prompts, responses):
        return [float(v) for v in self.task.reward(prompts, responses)]


class CallableReward(Reward):
    """A Python function `fn(prompts, responses) -> list[float]`.

    This imports and runs your code (the module named in `function`) with the training process's rights:
    only point it at code you trust.

    Args:
        function: 'package.module:function'.
    """

    def __init__(self, function: str):
        self.fn = import_callable(function, "CallableReward.function")

    def __call__(self, prompts, responses):
        return torch.as_tensor(self.fn(prompts, responses), dtype=torch.float32)

    def scores(self, prompts, responses):
        values = self.fn(prompts, responses)
        return [float(v) for v in (values.tolist() if isinstance(values, Tensor) else values)]


class RewardModelScorer(Reward):
    """A trained reward model: a lit_pref.RewardModel export (or any AutoModelForSequenceClassification
    folder with one label), scored at the last attended token of the rendered prompt + response.

    Args:
        path: The exported folder.
        text_as_chat: Render plain strings with the chat template; default: as the model was trained (the
            export's lit_pref_render.json), else false.
        max_length: Token limit of prompt + response; default: as trained, else 512.
        max_prompt_length: Token limit of the prompt (its end is kept); default: as trained, else 256.
        batch_size: Pairs per forward.
        device: Where the model runs.
    """

    def __init__(
        self,
        path: str,
        text_as_chat: bool | None = None,
        max_length: int | None = None,
        max_prompt_length: int | None = None,
        batch_size: int = 32,
        device: str = "cpu",
    ):
        import json
        from pathlib import Path

        from lit_pref.data.render import RENDER_SETTINGS, Renderer
        from lit_pref.models.loading import load_sequence_scorer, load_tokenizer

        check_range("RewardModelScorer.batch_size", batch_size, ge=1)
        settings_file = Path(path) / RENDER_SETTINGS
        trained = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        given = {
            "text_as_chat": text_as_chat,
            "max_length": max_length,
            "max_prompt_length": max_prompt_length,
        }
        defaults = {"text_as_chat": False, "max_length": 512, "max_prompt_length": 256}
        settings = {k: v if v is not None else trained.get(k, defaults[k]) for k, v in given.items()}
        self.tokenizer = load_tokenizer(path, "RewardModelScorer.path")
        self.model = load_sequence_scorer(
            path, pad_token_id=self.tokenizer.pad_token_id, option="RewardModelScorer.path"
        )
        self.model = self.model.to(device).eval()
        self.renderer = Renderer(self.tokenizer, **settings)
        self.batch_size = batch_size

    def __call__(self, prompts, responses):
        from lit_pref.models.scoring import score_texts

        return score_texts(self.model, self.renderer, prompts, responses, self.batch_size)


#: why a sampled response counts as degenerate (see `degenerate_reason`)
DEGENERATE_REASONS = {
    "empty": "empty",
    "punctuation": "no letter or digit (e.g. a lone '.')",
    "one_word": "one word repeated",
    "looping": "a loop: under half of its word trigrams are distinct",
}


def degenerate_reason(text: str) -> str | None:
    """Why `text` is a degenerate sample (a key of DEGENERATE_REASONS), or None for a real answer.

    These are the shapes a collapsed policy takes (over-optimization, likelihood displacement): nothing, a lone
    punctuation mark, one word over and over, or a phrase looping ("the lamp is great the lamp is great ...").
    A short real answer ("Great.", "The lamp is fine.") is not degenerate."""
    if not text.strip():
        return "empty"
    words = re.findall(r"\w+", text.lower())
    if not words:
        return "punctuation"
    if len(words) >= 2 and len(set(words)) == 1:
        return "one_word"
    trigrams = list(zip(words, words[1:], words[2:]))
    if len(words) >= 8 and len(set(trigrams)) < len(trigrams) / 2:
        return "looping"
    return None
