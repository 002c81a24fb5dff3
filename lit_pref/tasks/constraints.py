"""`constraints`: describe an item under 1-3 checkable constraints given as a natural-language preference z.

The task behind PRS's small-scale check (docs/prs.md): the prompt x is "Describe the <item>.", the preference z
says which constraints the user wants ("I prefer answers that mention price and use at most 6 words."), and the
true reward is computable: the fraction of z's constraints a response meets, minus a small length term that
breaks ties. The constraints are: mention a word, use at most n words, avoid a word, come as a list.

Besides rows, the task makes the three kinds of text a policy needs to reflect and refine (the built-in model
`builtin:tiny-sft-constraints` is trained on them): responses that meet each constraint only with probability
`p_satisfy`, feedback that lists the unmet constraints, and refinements that fix each listed one with
probability `p_fix` < 1. So refinement helps, but imperfectly; `oracle_feedback` is the exact feedback.
"""

from __future__ import annotations

import random
import re

from lit_pref.errors import DataError
from lit_pref.tasks.base import ROW_FORMATS, Task, split_setup

TRAIN_ITEMS = (
    "camera phone laptop kettle lamp chair table book jacket backpack bicycle blender toaster tent".split()
)
HELD_OUT_ITEMS = "mug bottle oven fridge printer tablet".split()
WORDS = "good great cheap small light quiet bright solid simple fast warm clean".split()
MENTIONS = "price quality battery screen sound design size color weight".split()
NO_ISSUES = "It fits the preference."

Constraint = tuple  # ("mention", word) | ("avoid", word) | ("max_words", n) | ("list",)


def clause(c: Constraint) -> str:
    """The words of one constraint, as the preference and the feedback say them."""
    kind = c[0]
    return {"mention": "mention {}", "avoid": "avoid the word {}", "max_words": "use at most {} words",
            "list": "come as a list"}[kind].format(*c[1:])  # fmt: skip


def preference_text(constraints: list[Constraint]) -> str:
    return "I prefer answers that " + " and ".join(clause(c) for c in constraints) + "."


def parse_constraints(text: str) -> list[Constraint]:
    """The constraints a prompt (x + z) or preference states, in order of appearance."""
    found = [(m.start(), ("mention", m.group(1))) for m in re.finditer(r"\bmention (\w+)", text)]
    found += [(m.start(), ("avoid", m.group(1))) for m in re.finditer(r"\bavoid the word (\w+)", text)]
    found += [
        (m.start(), ("max_words", int(m.group(1)))) for m in re.finditer(r"\buse at most (\d+) words", text)
    ]
    found += [(m.start(), ("list",)) for m in re.finditer(r"\bcome as a list", text)]
    return [c for _, c in sorted(found)]


def words(response: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", response.lower())


def is_list(response: str) -> bool:
    return "\n- " in response


def met(c: Constraint, response: str) -> bool:
    ws = words(response)
    if c[0] == "mention":
        return c[1] in ws
    if c[0] == "avoid":
        return c[1] not in ws
    if c[0] == "max_words":
        return len(ws) <= c[1]
    return is_list(response)


def render(item: str, parts: list[str], as_list: bool) -> str:
    """'The lamp is bright, cheap and price.' or 'The lamp:' with one '- part' line per part."""
    if as_list:
        return f"The {item}:" + "".join(f"\n- {p}" for p in parts)
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"The {item} is {joined}."


def parse_response(response: str) -> tuple[str, list[str], bool] | None:
    """(item, parts, as_list) of a response in the task's own form, else None."""
    m = re.fullmatch(r"The (\w+):((?:\n- \w+)+)", response)
    if m:
        return m.group(1), m.group(2).split("\n- ")[1:], True
    m = re.fullmatch(r"The (\w+) is (\w+(?:, \w+)*(?: and \w+)?)\.", response)
    if m:
        return m.group(1), re.split(r", | and ", m.group(2)), False
    return None


def oracle_feedback(questions: list[str], answers: list[str], preferences: list[str]) -> list[str]:
    """Exact feedback: one '- <constraint>' line per constraint of the preference the answer misses (the upper
    bound on feedback quality; `lit_pref.PRS(feedback_function='lit_pref.tasks.constraints:oracle_feedback')`)."""
    return [feedback_for(parse_constraints(z), y) for y, z in zip(answers, preferences)]


def feedback_for(constraints: list[Constraint], response: str) -> str:
    unmet = [c for c in constraints if not met(c, response)]
    return "\n".join(f"- {clause(c)}" for c in unmet) if unmet else NO_ISSUES


class ConstraintsTask(Task):
    """Describe an item under constraints stated in a preference; reward = fraction of constraints met.

    Args:
        seed: Seed of every generated row (train uses seed, val seed + 1, test seed + 2).
        num_rows: Rows per training split (val and test get a quarter, at least 32).
        length_coef: Subtracted per word of the response (breaks ties between equally compliant answers).
        p_satisfy: Probability that a demonstration response meets each constraint.
        p_fix: Probability that a demonstration refinement fixes each constraint its feedback lists.
    """

    name = "constraints"

    def __init__(self, seed: int = 0, num_rows: int = 2000, length_coef: float = 0.01, p_satisfy: float = 0.5,
                 p_fix: float = 0.7):  # fmt: skip
        for option, value in (("p_satisfy", p_satisfy), ("p_fix", p_fix)):
            if not 0 <= value <= 1:
                raise DataError(f"task option {option} must be in [0, 1], got {value}")
        self.seed, self.num_rows, self.length_coef = seed, num_rows, length_coef
        self.p_satisfy, self.p_fix = p_satisfy, p_fix

    def reward(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for prompt, response in zip(prompts, responses):
            text = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
            constraints = parse_constraints(text)
            if not constraints:
                raise DataError(
                    f"task:constraints reward: the prompt {text!r:.80} states no constraint. The reward reads "
                    "them from the preference: score x + z (samplers: reward_sees_preference: true)"
                )
            done = sum(met(c, response) for c in constraints) / len(constraints)
            out.append(done - self.length_coef * len(words(response)))
        return out

    # -- generation -----------------------------------------------------------------------------------------
    def _split(self, split: str) -> tuple[random.Random, list[str], int]:
        return split_setup(self, split, TRAIN_ITEMS, HELD_OUT_ITEMS, salt=31)

    @staticmethod
    def constraints(rng: random.Random) -> list[Constraint]:
        kinds = rng.sample(["mention", "avoid", "max_words", "list"], rng.randint(1, 3))
        pool = {"mention": lambda: ("mention", rng.choice(MENTIONS)), "avoid": lambda: ("avoid", rng.choice(WORDS)),
                "max_words": lambda: ("max_words", rng.randint(4, 7)), "list": lambda: ("list",)}  # fmt: skip
        return [pool[k]() for k in kinds]

    def examples(self, split: str) -> list[tuple[str, str, list[Constraint]]]:
        """(x, z, constraints) of each row of a split."""
        rng, items, n = self._split(split)
        out = []
        for _ in range(n):
            cs = self.constraints(rng)
            out.append((f"Describe the {rng.choice(items)}.", preference_text(cs), cs))
        return out

    def respond(self, rng: random.Random, item: str, constraints: list[Constraint]) -> str:
        """A response meeting each constraint with probability p_satisfy."""
        parts = rng.sample(WORDS + MENTIONS[:3], rng.randint(1, 4))
        as_list = rng.random() < 0.3
        return self._apply(
            rng, item, parts, as_list, constraints, [rng.random() < self.p_satisfy for _ in constraints]
        )

    def refine(self, rng: random.Random, response: str, constraints: list[Constraint]) -> str:
        """The response with each unmet constraint fixed with probability p_fix (the others left alone)."""
        item, parts, as_list = parse_response(response)
        todo = [c for c in constraints if not met(c, response) and rng.random() < self.p_fix]
        return self._apply(rng, item, list(parts), as_list, todo, [True] * len(todo))

    @staticmethod
    def _apply(rng, item, parts, as_list, constraints, satisfy) -> str:
        """Make each constraint met (or missed) by editing the parts; word limits last, keeping wanted words."""
        keep = {c[1] for c, ok in zip(constraints, satisfy) if c[0] == "mention" and ok}
        for c, ok in sorted(zip(constraints, satisfy), key=lambda t: t[0][0] == "max_words"):
            if c[0] == "list":
                as_list = ok
            elif c[0] in ("mention", "avoid"):
                present = (c[0] == "mention") == ok
                parts = [p for p in parts if p != c[1]]
                if present:
                    parts.insert(rng.randint(0, len(parts)), c[1])
            else:
                parts = parts or [rng.choice(WORDS)]
                spare = [p for p in WORDS if p not in parts]
                while ok and len(parts) > 1 and len(words(render(item, parts, as_list))) > c[1]:
                    droppable = [i for i, p in enumerate(parts) if p not in keep] or [len(parts) - 1]
                    parts.pop(rng.choice(droppable))
                while not ok and len(words(render(item, parts, as_list))) <= c[1]:
                    parts.append(spare.pop(rng.randrange(len(spare))))
        return render(item, parts or [rng.choice(WORDS)], as_list)

    def rows(self, row_format: str, split: str) -> list[dict]:
        if row_format not in ROW_FORMATS or row_format == "outcome":
            raise DataError(
                f"task:{self.name} makes pairwise, demonstration and prompt rows, not {row_format!r}"
            )
        rng = random.Random(self.seed * 1000 + 77 + len(split))
        out = []
        for x, z, cs in self.examples(split):
            item = x.split()[-1].rstrip(".")
            prompt = x + "\n\n" + z  # the policy input, as lit_pref.sampling.with_preference builds it
            if row_format == "prompt":
                out.append({"prompt": x, "preference": z})
            elif row_format == "demonstration":
                out.append({"prompt": prompt, "response": self.respond(rng, item, cs)})
            else:
                a, b = sorted((self.respond(rng, item, cs) for _ in range(2)),
                              key=lambda r: -self.reward([prompt], [r])[0])  # fmt: skip
                out.append({"prompt": prompt, "chosen": a, "rejected": b})
        return out
