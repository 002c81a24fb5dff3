"""`reviews`: write a one-line review of an item; the true reward is the VADER sentiment of the response.

VADER (the `vaderSentiment` package, whose lexicon ships in its wheel) is a real, independent scorer: a policy
raises its reward only by writing text that a sentiment lexicon nobody here tuned finds positive. Responses are
short sentences from templates over positive, negative and neutral words (with intensifiers and negations), so
the tiny model can learn the language in seconds and preference methods have a clear direction to move it.
"""

from __future__ import annotations

import math
import random
from functools import cached_property

from lit_pref.errors import DataError
from lit_pref.tasks.base import ROW_FORMATS, Task, split_setup

TRAIN_ITEMS = (
    "camera phone laptop kettle lamp chair table book movie album jacket backpack bicycle blender toaster "
    "headphones speaker keyboard mouse monitor watch umbrella tent mattress pillow blanket mug bottle knife pan "
    "oven fridge printer router tablet charger shoes boots hat scarf"
).split()
HELD_OUT_ITEMS = "gloves coffee tea bread pizza soup salad hotel restaurant museum".split()
PROMPTS = [
    "Write a one-line review of the {item}.",
    "Review the {item} in one line.",
    "What do you think of the {item}?",
]
POSITIVE = "great excellent wonderful lovely fantastic amazing perfect brilliant superb delightful nice pleasant".split()
NEGATIVE = "terrible awful horrible disappointing boring ugly useless annoying flimsy poor bad broken".split()
NEUTRAL = "ordinary average plain standard typical regular normal simple small large heavy light".split()
TEMPLATES = [
    "The {item} is {adj}.",
    "The {item} is {very} {adj}.",
    "This {item} is {adj} and {adj2}.",
    "A {adj} {item}, {very} {adj2}.",
    "I think the {item} is {adj}.",
    "Honestly, the {item} is {adj}.",
    "The {item} is not {adj}.",
]
INTENSIFIERS = ["very", "really", "quite", "so"]


class ReviewsTask(Task):
    """One-line product reviews scored by VADER compound sentiment (in [-1, 1]).

    Args:
        seed: Seed of every generated row (train uses seed, val seed + 1, test seed + 2).
        num_rows: Rows per training split (val and test get a quarter, at least 32).
        label_noise: Probability that a pairwise label is flipped.
        length_coef: Adds length_coef * (number of words) to the reward (0: sentiment only).
        outcome_noise: Standard deviation of the Gaussian noise on outcome rows.
        outcome_texts: Size of the fixed text pool that outcome rows are randomly assigned from.
    """

    name = "reviews"

    def __init__(
        self,
        seed: int = 0,
        num_rows: int = 2000,
        label_noise: float = 0.0,
        length_coef: float = 0.0,
        outcome_noise: float = 0.3,
        outcome_texts: int = 24,
    ):
        if not 0 <= label_noise < 0.5:
            raise DataError(f"task option label_noise must be in [0, 0.5), got {label_noise}")
        self.seed = seed
        self.num_rows = num_rows
        self.label_noise = label_noise
        self.length_coef = length_coef
        self.outcome_noise = outcome_noise
        self.outcome_texts = outcome_texts

    @cached_property
    def _vader(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        return SentimentIntensityAnalyzer()

    def reward(self, prompts: list[str], responses: list[str]) -> list[float]:
        return [
            self._vader.polarity_scores(r)["compound"] + self.length_coef * len(r.split()) for r in responses
        ]

    # -- generation ---------------------------------------------------------------------------------------
    def _split_setup(self, split: str) -> tuple[random.Random, list[str], int]:
        return split_setup(self, split, TRAIN_ITEMS, HELD_OUT_ITEMS)

    @staticmethod
    def _prompt(rng: random.Random, item: str) -> str:
        return rng.choice(PROMPTS).format(item=item)

    @staticmethod
    def _response(rng: random.Random, item: str) -> str:
        pool = rng.choice([POSITIVE, NEGATIVE, NEUTRAL])  # mixed sentiment: demonstrations cover all three
        template = rng.choice(TEMPLATES)
        text = template.format(
            item=item, adj=rng.choice(pool), adj2=rng.choice(pool), very=rng.choice(INTENSIFIERS)
        )
        return "An " + text[2:] if text.startswith("A ") and text[2] in "aeiou" else text

    def rows(self, row_format: str, split: str) -> list[dict]:
        if row_format not in ROW_FORMATS:
            raise DataError(
                f"task:{self.name} makes {', '.join(ROW_FORMATS)} rows; set data.format to one of them"
            )
        rng, items, n = self._split_setup(split)
        if row_format == "outcome":
            return self._outcome_rows(rng, items, n)
        out = []
        for _ in range(n):
            item = rng.choice(items)
            prompt = self._prompt(rng, item)
            if row_format == "prompt":
                out.append({"prompt": prompt})
            elif row_format == "demonstration":
                out.append({"prompt": prompt, "response": self._response(rng, item)})
            else:
                out.append(self._pair(rng, prompt, item))
        return out

    def _pair(self, rng: random.Random, prompt: str, item: str) -> dict:
        while True:  # two responses with different true rewards
            a, b = self._response(rng, item), self._response(rng, item)
            ra, rb = self.reward([prompt, prompt], [a, b])
            if ra != rb:
                break
        chosen, rejected = (a, b) if ra > rb else (b, a)
        if rng.random() < self.label_noise:
            chosen, rejected = rejected, chosen
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}

    def outcome_pool(self) -> tuple[list[str], list[float]]:
        """The fixed texts that outcome rows are randomly assigned from, and their known assignment
        probabilities (a softmax of seeded logits: unequal but all positive)."""
        rng = random.Random(self.seed * 1000 + 7)
        texts = [self._response(rng, rng.choice(TRAIN_ITEMS)) for _ in range(self.outcome_texts)]
        logits = [rng.gauss(0, 1) for _ in texts]
        z = sum(math.exp(v) for v in logits)
        return texts, [math.exp(v) / z for v in logits]

    def _outcome_rows(self, rng: random.Random, _items, n: int) -> list[dict]:
        texts, propensities = self.outcome_pool()
        effects = self.reward([""] * len(texts), texts)  # g(x): the mean outcome had everyone read x
        rows = []
        for _ in range(n):
            k = rng.choices(range(len(texts)), weights=propensities)[0]
            outcome = effects[k] + rng.gauss(0, self.outcome_noise)
            rows.append({"text": texts[k], "outcome": outcome, "propensity": propensities[k]})
        return rows
