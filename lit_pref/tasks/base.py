"""Built-in tasks: rows generated in code from a seed, with a known ground-truth reward."""

from __future__ import annotations

from abc import ABC, abstractmethod

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
