"""`listops`: copy, reverse or sort a short list of number words; every answer is exactly checkable.

Prompt "reverse: seven two five", answer "answer: five two seven". The clean answer of every row is known, so a
fraction `corruption` of the training demonstrations can be made low quality on purpose (a wrong word, a
truncated list, or random words) while validation and test stay clean — the setting of IRFT's robustness claim
(ALGORITHMS.md, IRFT / RFT). Test and validation lists never occur in training (a hash split of the lists).
"""

from __future__ import annotations

import random
import zlib

from lit_pref.errors import DataError
from lit_pref.tasks.base import ROW_FORMATS, Task

NUMBER_WORDS = "one two three four five six seven eight nine".split()
VALUE = {w: i + 1 for i, w in enumerate(NUMBER_WORDS)}
OPERATIONS = ("copy", "reverse", "sort")
ANSWER_PREFIX = "answer:"
CORRUPTIONS = ("wrong", "truncated", "noise")
HELD_OUT_BUCKETS = 5  # one list in five (by hash) is held out for val/test


def solve(operation: str, words: list[str]) -> list[str]:
    if operation == "copy":
        return list(words)
    if operation == "reverse":
        return words[::-1]
    if operation == "sort":
        return sorted(words, key=VALUE.__getitem__)
    raise DataError(f"task:listops has operations {OPERATIONS}, not {operation!r}")


def answer_text(words: list[str]) -> str:
    return " ".join([ANSWER_PREFIX, *words])


def parse_prompt(prompt: str) -> tuple[str, list[str]]:
    operation, _, rest = prompt.partition(":")
    return operation.strip(), rest.split()


def answer_words(response: str) -> list[str]:
    """The listed words of a response (the 'answer:' prefix, when present, is not a word)."""
    words = response.replace(",", " ").replace(".", " ").split()
    return words[1:] if words and words[0] == ANSWER_PREFIX else words


def partial_credit(predicted: list[str], gold: list[str]) -> float:
    """Fraction of positions right, over the longer of the two lists (extra or missing words cost)."""
    right = sum(p == g for p, g in zip(predicted, gold))
    return right / max(len(predicted), len(gold), 1)


class ListOpsTask(Task):
    """List transformations with exact answers and optionally corrupted training demonstrations.

    Args:
        seed: Seed of every generated row (train uses seed, val seed + 1, test seed + 2).
        num_rows: Rows of the training split (val and test get a quarter, at least 32).
        min_words: Shortest list.
        max_words: Longest list (at most 9: the words of a list are distinct).
        corruption: Fraction rho of training demonstrations replaced by a low-quality answer (val/test stay clean).
        reward: exact (1 if the answer is exactly right, else 0) or partial (fraction of positions right).
    """

    name = "listops"

    def __init__(
        self,
        seed: int = 0,
        num_rows: int = 2000,
        min_words: int = 2,
        max_words: int = 4,
        corruption: float = 0.0,
        reward: str = "partial",
    ):
        if not 1 <= min_words <= max_words <= len(NUMBER_WORDS):
            raise DataError(
                f"task:listops needs 1 <= min_words <= max_words <= 9, got {min_words}, {max_words}"
            )
        if not 0 <= corruption <= 1:
            raise DataError(f"task option corruption must be in [0, 1], got {corruption}")
        if reward not in ("exact", "partial"):
            raise DataError(f"task option reward must be exact or partial, got {reward!r}")
        self.seed = seed
        self.num_rows = num_rows
        self.min_words = min_words
        self.max_words = max_words
        self.corruption = corruption
        self.reward_kind = reward

    # -- ground truth -------------------------------------------------------------------------------------
    @staticmethod
    def clean_answer(prompt: str) -> str:
        operation, words = parse_prompt(prompt)
        return answer_text(solve(operation, words))

    def reward(self, prompts: list, responses: list[str]) -> list[float]:
        out = []
        for prompt, response in zip(prompts, responses):
            gold = answer_words(self.clean_answer(_prompt_text(prompt)))
            predicted = answer_words(response)
            out.append(
                float(predicted == gold) if self.reward_kind == "exact" else partial_credit(predicted, gold)
            )
        return out

    # -- generation ---------------------------------------------------------------------------------------
    def _prompts(self, split: str) -> tuple[random.Random, list[str]]:
        offsets = {"train": 0, "val": 1, "test": 2}
        if split not in offsets:
            raise DataError(f"task:{self.name} has splits train, val and test, not {split!r}")
        rng = random.Random(self.seed * 1000 + offsets[split])
        n = self.num_rows if split == "train" else max(self.num_rows // 4, 32)
        prompts = []
        while len(prompts) < n:
            words = rng.sample(NUMBER_WORDS, rng.randint(self.min_words, self.max_words))
            held_out = zlib.crc32(" ".join(words).encode()) % HELD_OUT_BUCKETS == 0
            if held_out == (split != "train"):
                prompts.append(f"{rng.choice(OPERATIONS)}: {' '.join(words)}")
        return rng, prompts

    def corrupt(self, rng: random.Random, prompt: str) -> str:
        """A low-quality answer to `prompt` (never the clean one): a wrong word, a truncated list or noise."""
        gold = answer_words(self.clean_answer(prompt))
        kind = rng.choice(CORRUPTIONS)
        if kind == "truncated" and len(gold) > 1:
            return answer_text(gold[: rng.randint(1, len(gold) - 1)])
        if kind == "noise":
            noise = [rng.choice(NUMBER_WORDS) for _ in gold]
            if noise != gold:
                return answer_text(noise)
        wrong = list(gold)  # "wrong" (and the fallback): one word replaced by another
        position = rng.randrange(len(wrong))
        wrong[position] = rng.choice([w for w in NUMBER_WORDS if w != gold[position]])
        return answer_text(wrong)

    def rows(self, row_format: str, split: str) -> list[dict]:
        if row_format not in ROW_FORMATS or row_format == "outcome":
            raise DataError(
                f"task:{self.name} makes pairwise, demonstration and prompt rows; set data.format to one of them"
            )
        rng, prompts = self._prompts(split)
        if row_format == "prompt":
            return [{"prompt": p} for p in prompts]
        if row_format == "pairwise":  # chosen: the clean answer; rejected: a corrupted one
            return [
                {"prompt": p, "chosen": self.clean_answer(p), "rejected": self.corrupt(rng, p)}
                for p in prompts
            ]
        rho = self.corruption if split == "train" else 0.0
        return [
            {"prompt": p, "response": self.corrupt(rng, p) if rng.random() < rho else self.clean_answer(p)}
            for p in prompts
        ]


def _prompt_text(prompt) -> str:
    """The user text of a prompt given as a string or as chat messages."""
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")
