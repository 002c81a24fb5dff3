"""Best-of-N samplers: Rand, PRand and PRS (Preference-Guided Reflective Sampling, arXiv 2408.12163).

Each sampler turns prompts x with preferences z into N scored candidates per prompt and the best of them:

- `Rand`: N samples of x (the preference is not shown to the policy);
- `PRand`: N samples of x + "\\n\\n" + z;
- `PRS`: a tree. Layer 0 holds widths[0] samples of x + "\\n\\n" + z; every deeper layer l takes the best
  candidate so far, lets the same policy write one feedback on it (optional), and samples widths[l]
  refinements conditioned on (question, best answer, preference[, feedback]) through prompt templates.

Every candidate carries its layer, its reward and the tokens spent on it, and every prompt the feedback calls
and their tokens, so studies compare samplers at equal N and at equal tokens (the official code charges PRS for
neither the feedback call nor its longer refinement prompts; lit_pref counts both). A prompt processed for k
samples is counted k times: generation here does not share a prompt's KV cache between its samples.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from lit_pref.errors import ConfigError, LitPrefError, check_range
from lit_pref.imports import import_callable
from lit_pref.sampling.config import SamplingConfig
from lit_pref.sampling.generate import Generation, generate

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_FIELDS = {
    "feedback": ("question", "answer", "preference"),
    "refine": ("question", "answer", "preference", "feedback"),
    "refine_without_feedback": ("question", "answer", "preference"),
}
#: seeds of a call's generations: layer l samples with seed + SEED_STRIDE * (2 l), its feedback with 2 l - 1
SEED_STRIDE = 1_000_003


def official_sampling(max_new_tokens: int | None = None) -> SamplingConfig:
    """The official PRS code's settings for every call (responses, feedback, refinements)."""
    return SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.8, top_k=50, top_p=1.0,
                          presence_penalty=1.2)  # fmt: skip


def with_preference(prompt: str, preference: str | None) -> str:
    """x + "\\n\\n" + z with trailing whitespace stripped, as the official code builds the policy input; x alone
    when there is no preference."""
    if not preference or not preference.strip():
        return prompt
    return (prompt + "\n\n" + preference).rstrip()


def load_template(name: str, override: str | None = None) -> str:
    """A template's text: the shipped file `templates/<name>.txt`, or the file `override`."""
    path = Path(override) if override else TEMPLATE_DIR / f"{name}.txt"
    if not path.is_file():
        raise ConfigError(f"PRS templates.{name}: no file {str(path)!r}; give a path to a text file")
    text = path.read_text().rstrip()
    missing = [f for f in TEMPLATE_FIELDS[name] if "{" + f + "}" not in text]
    if missing:
        raise ConfigError(f"PRS template {str(path)!r} lacks the field(s) {missing}: write them as {{name}}")
    return text


@dataclass
class Policy:
    """What a sampler generates with: a causal LM, its tokenizer, and `encode`, which turns a prompt text into
    prompt token ids through the policy's chat template (e.g. `module.renderer().full_prompt_ids`)."""

    model: nn.Module
    tokenizer: object
    encode: Callable[[str], list[int]]
    batch_size: int = 32
    max_new_tokens: int | None = None
    synced_gpus: bool = False

    def complete(self, texts: list[str], config: SamplingConfig, seed: int) -> tuple[Generation, list[int]]:
        """One completion per prompt text, and each prompt's token count."""
        ids = [self.encode(t) for t in texts]
        out = generate(self.model, self.tokenizer, ids, config, batch_size=self.batch_size, seed=seed,
                       max_new_tokens=self.max_new_tokens, synced_gpus=self.synced_gpus)  # fmt: skip
        return out, [len(i) for i in ids]


@dataclass
class Candidate:
    """One scored response: its text, the tree layer it came from, its reward, and its own tokens (its prompt,
    the refinement prompt for layers >= 1, and its completion)."""

    text: str
    layer: int
    reward: float
    prompt_tokens: int
    generated_tokens: int


@dataclass
class Sampled:
    """All candidates of one prompt, the feedback written (one per refining layer with feedback), and the
    feedback generations the policy ran (none with a feedback_function) and their tokens."""

    prompt: str
    preference: str
    candidates: list[Candidate] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    feedback_calls: int = 0
    feedback_prompt_tokens: int = 0
    feedback_generated_tokens: int = 0

    @property
    def best(self) -> int:
        """Index of the highest-reward candidate (the first one on ties)."""
        rewards = [c.reward for c in self.candidates]
        return rewards.index(max(rewards))

    def best_so_far(self) -> Candidate:
        return self.candidates[self.best]

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.candidates) + self.feedback_prompt_tokens

    @property
    def generated_tokens(self) -> int:
        return sum(c.generated_tokens for c in self.candidates) + self.feedback_generated_tokens

    def ranked(self) -> list[Candidate]:
        """Candidates by decreasing reward (stable: ties keep their order)."""
        return sorted(self.candidates, key=lambda c: -c.reward)

    def to_row(self) -> dict:
        best = self.candidates[self.best]
        return {
            "prompt": self.prompt,
            "preference": self.preference,
            "best": best.text,
            "best_reward": best.reward,
            "best_layer": best.layer,
            "candidates": [vars(c) for c in self.candidates],
            "feedback": self.feedback,
            "tokens": {
                "prompt": self.prompt_tokens,
                "generated": self.generated_tokens,
                "feedback_calls": self.feedback_calls,
            },  # fmt: skip
        }


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a[i] - b[i] over prompts i (two samplers' best rewards on the same prompts) and its standard error.
    Pairing by prompt removes the spread between easy and hard prompts from the comparison."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(
            f"paired_difference needs two equally long lists of >= 2 values, got {len(a)} and {len(b)}"
        )
    diffs = [x - y for x, y in zip(a, b)]
    return statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))


def score(reward, prompts: list, responses: list[str], failed_score: float | None) -> list[float]:
    """reward(prompts, responses) as floats. A reward that raises or returns a non-finite value is an error,
    unless `failed_score` is set: then the failing items (found one by one) get it, as the official code's 0.0."""
    try:
        values = full_precision(reward, prompts, responses)
        if len(values) != len(responses):
            raise ValueError(f"{len(values)} scores for {len(responses)} responses")
        if all(math.isfinite(v) for v in values):
            return values
        if failed_score is None:
            bad = next(i for i, v in enumerate(values) if not math.isfinite(v))
            raise ValueError(f"score {values[bad]} for response {responses[bad]!r:.80}")
    except Exception as exc:
        if failed_score is None:
            raise LitPrefError(
                f"the reward failed ({exc}); fix the reward, or set the sampler's failed_score (e.g. 0.0, as "
                "the official PRS code does) to score failing responses with it"
            ) from exc
    return [_score_one(reward, p, r, failed_score) for p, r in zip(prompts, responses)]


def full_precision(reward, prompts: list, responses: list[str]) -> list[float]:
    """A reward's scores as Python floats, without a float32 round trip when it offers `scores` (lit_pref rewards)."""
    scores = getattr(reward, "scores", None)
    return (
        list(scores(prompts, responses))
        if callable(scores)
        else [float(v) for v in reward(prompts, responses)]
    )


def _score_one(reward, prompt, response: str, failed_score: float) -> float:
    try:
        value = float(full_precision(reward, [prompt], [response])[0])
    except Exception:
        return failed_score
    return value if math.isfinite(value) else failed_score


class Sampler:
    """Best-of-N sampling from one policy (base class of Rand, PRand and PRS).

    Args:
        n: Candidates per prompt (N).
        sampling: Generation settings of every call; default: the official PRS settings (temperature 0.8,
            top_k 50, top_p 1.0, presence penalty 1.2).
        failed_score: Score of a response whose reward fails (raises or is not finite); unset: such a
            failure stops the run with an error.
    """

    #: whether the policy sees x + "\n\n" + z (PRand, PRS) or x alone (Rand)
    conditions_on_preference = True

    def __init__(
        self, n: int = 16, sampling: SamplingConfig | None = None, failed_score: float | None = None
    ):
        check_range("sampler.n", n, ge=1)
        self.n = n
        self.sampling = SamplingConfig(**sampling) if isinstance(sampling, dict) else sampling
        self.sampling = self.sampling or official_sampling()
        self.failed_score = failed_score

    def widths(self) -> list[int]:
        return [self.n]

    def run(self, policy: Policy, prompts: list[str], preferences: list[str | None], reward,
            reward_sees_preference: bool = False, seed: int | None = None) -> list[Sampled]:  # fmt: skip
        """N scored candidates per prompt. The reward scores (x + "\\n\\n" + z, y) with
        `reward_sees_preference`, else (x, y) (the official code's choice for a common preference)."""
        if len(prompts) != len(preferences):
            raise ValueError(f"{len(prompts)} prompts but {len(preferences)} preferences")
        seed = self.sampling.seed if seed is None else seed
        results = [Sampled(p, z or "") for p, z in zip(prompts, preferences)]
        questions = [with_preference(p, z) for p, z in zip(prompts, preferences)]
        reward_prompts = questions if reward_sees_preference else list(prompts)
        for layer, width in enumerate(self.widths()):
            if layer == 0:
                inputs = questions if self.conditions_on_preference else list(prompts)
            else:
                inputs = self.refine_prompts(policy, results, questions, layer, seed)
            rows = [text for text in inputs for _ in range(width)]
            out, prompt_lengths = policy.complete(rows, self.sampling, seed + SEED_STRIDE * 2 * layer)
            rewards = score(reward, [p for p in reward_prompts for _ in range(width)], out.texts,
                            self.failed_score)  # fmt: skip
            for i, (text, r, plen, ids) in enumerate(
                zip(out.texts, rewards, prompt_lengths, out.completions)
            ):
                results[i // width].candidates.append(Candidate(text, layer, r, plen, len(ids)))
        return results

    def refine_prompts(self, policy, results, questions, layer, seed) -> list[str]:
        raise NotImplementedError


class Rand(Sampler):
    """N samples of the prompt x alone (the preference is hidden from the policy). Args as Sampler."""

    conditions_on_preference = False


class PRand(Sampler):
    """N samples of x + "\\n\\n" + z. Args as Sampler."""


class PRS(Sampler):
    """Preference-guided reflective sampling: a tree of widths[0] samples of x + "\\n\\n" + z, then for each
    deeper layer one feedback on the best candidate so far and widths[l] refinements of it.

    Args:
        n: Candidates per prompt, used when `widths` is unset: two layers of n // 2 and n - n // 2.
        widths: Candidates per layer (their sum is N), e.g. [8, 8] or [4, 6, 6].
        feedback: Let the policy write feedback before refining (false: the refine-without-feedback template).
        templates: Template files overriding the shipped ones: {feedback: PATH, refine: PATH,
            refine_without_feedback: PATH}; fields are {question} (x + "\\n\\n" + z), {answer}, {preference}
            and {feedback}. The filled template is the user turn of the policy's chat template.
        feedback_function: 'package.module:function' returning feedback texts for (questions, answers,
            preferences) instead of the policy (e.g. lit_pref.tasks.constraints:oracle_feedback, the upper
            bound of feedback quality); it costs no tokens.
        sampling: Generation settings (default: the official ones, see Sampler).
        failed_score: See Sampler.
    """

    def __init__(
        self,
        n: int = 16,
        widths: list[int] | None = None,
        feedback: bool = True,
        templates: dict[str, str] | None = None,
        feedback_function: str | None = None,
        sampling: SamplingConfig | None = None,
        failed_score: float | None = None,
    ):
        if widths is not None:
            if not widths or any(w < 1 for w in widths):
                raise ConfigError(f"sampler.widths must be a non-empty list of positive widths, got {widths}")
            n = sum(widths)
        elif n < 2:
            raise ConfigError(f"PRS needs n >= 2 (two layers of n/2), got {n}; or give sampler.widths")
        super().__init__(n, sampling, failed_score)
        self._widths = list(widths) if widths is not None else [n // 2, n - n // 2]
        unknown = set(templates or {}) - set(TEMPLATE_FIELDS)
        if unknown:
            raise ConfigError(
                f"sampler.templates: unknown template(s) {sorted(unknown)}; use {sorted(TEMPLATE_FIELDS)}"
            )
        self.feedback = feedback
        self.templates = {name: load_template(name, (templates or {}).get(name)) for name in TEMPLATE_FIELDS}
        self.feedback_function = (
            import_callable(feedback_function, "sampler.feedback_function") if feedback_function else None
        )

    def widths(self) -> list[int]:
        return self._widths

    def refine_prompts(self, policy, results, questions, layer, seed) -> list[str]:
        answers = [r.best_so_far().text for r in results]
        preferences = [r.preference for r in results]
        fields = [
            {"question": q, "answer": a, "preference": z} for q, a, z in zip(questions, answers, preferences)
        ]
        if not self.feedback:
            return [self.templates["refine_without_feedback"].format(**f) for f in fields]
        if self.feedback_function is not None:
            feedback = list(self.feedback_function(questions, answers, preferences))
        else:
            asks = [self.templates["feedback"].format(**f) for f in fields]
            out, prompt_lengths = policy.complete(asks, self.sampling, seed + SEED_STRIDE * (2 * layer - 1))
            feedback = out.texts
            for r, plen, ids in zip(results, prompt_lengths, out.completions):
                r.feedback_calls += 1
                r.feedback_prompt_tokens += plen
                r.feedback_generated_tokens += len(ids)
        for r, f in zip(results, feedback):
            r.feedback.append(f)
        return [self.templates["refine"].format(**f, feedback=fb) for f, fb in zip(fields, feedback)]
