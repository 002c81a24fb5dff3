"""Built-in tasks: rows generated in code from a seed, with a known ground-truth reward."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

from lit_pref.errors import DataError

ROW_FORMATS = ("pairwise", "demonstration", "outcome", "prompt")


class Task(ABC):
    """A task makes rows of every DataModule format for a split, and scores responses with its true reward."""

    name: str

    @abstractmethod
    def rows(self, row_format: str, split: str) -> list[dict]:
        """Rows of `row_format` for `split` (train, val or test), identical for identical settings."""

    @abstractmethod
    def reward(self, prompts: list[str], responses: list[str]) -> list[float]:
        """The ground-truth reward of each (prompt, response)."""


def split_setup(task: Task, split: str, train_items: list[str], held_out_items: list[str],
                salt: int = 0) -> tuple[random.Random, list[str], int]:  # fmt: skip
    """(seeded generator, items, row count) of a split: train draws from `train_items` (task.num_rows rows), val
    and test from `held_out_items` (a quarter, at least 32 rows)."""
    offsets = {"train": 0, "val": 1, "test": 2}
    if split not in offsets:
        raise DataError(f"task:{task.name} has splits train, val and test, not {split!r}")
    items = train_items if split == "train" else held_out_items
    n = task.num_rows if split == "train" else max(task.num_rows // 4, 32)
    return random.Random(task.seed * 1000 + salt + offsets[split]), items, n
