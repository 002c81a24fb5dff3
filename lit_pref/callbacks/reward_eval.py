"""Sample from the policy on held-out prompts (or unconditionally, from the empty prompt) and score the samples
with a reward, every N steps."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn

from lit_pref.atomic import atomic_write
from lit_pref.callbacks.periodic import PeriodicCallback
from lit_pref.callbacks.samples import markdown_table, text_loggers
from lit_pref.errors import ConfigError, check_range
from lit_pref.models.batching import map_sequences
from lit_pref.models.companions import CompanionModel, FrozenCopy
from lit_pref.models.logprobs import sequence_logps
from lit_pref.rewards import DEGENERATE_REASONS, Reward, degenerate_reason
from lit_pref.sampling import SamplingConfig

#: the module attribute under which the starting policy is registered as a companion
START_COMPANION = "eval_start_policy"


class RewardEvaluation(PeriodicCallback):
    """Every `every_n_steps` steps (and before training and at its end), generate one response per held-out
    prompt and log:

    - `eval/reward_mean`, `eval/reward_std`: the reward of the policy's samples;
    - `eval/win_rate_vs_ref`: how often the policy's sample beats the starting policy's sample for the same
      prompt under the reward (ties count 1/2);
    - `eval/kl_to_ref`: sample estimate of KL(policy || starting policy), the mean of sum_t log pi/pi_start over
      the policy's samples (an unbiased estimate at temperature 1);
    - `eval/response_length`: mean generated tokens;
    - `eval/degenerate_fraction`: the fraction of samples that are degenerate (empty, no letter or digit, one
      word repeated, a looping phrase: `lit_pref.rewards.degenerate_reason`), the mark of a collapsed policy;
    - `eval/samples` (TEXT): a few prompts with the response and its reward.

    A collapse is said, not hidden: when the degenerate fraction exceeds `degenerate_warning` or the KL to the
    starting policy exceeds `kl_warning`, the evaluation warns and the summary ends with a WARNING block. Every
    evaluation (metrics, a few samples, the warnings, and each prompt's reward, win, KL term, length, response and
    degenerate flag, for paired comparisons between runs) is written to `<log_dir>/reward_evaluation.json`.

    The "reference" here is the policy as it was when fit started: a frozen companion model of the module
    (registered in `setup`, so it is sharded under FSDP2 like every other frozen model).

    With `unconditional`, the policy is a generator of whole texts (direct-outcome rows with no prompt, as
    CausalPO trains on) and each "prompt" is the empty prompt rendered as those rows' is (the start token when
    `data.text_as_chat` is false): `eval/reward_mean` estimates the policy's value E_{X~policy} reward(X) from
    `num_prompts` independent samples. Generation is seeded per batch, so sample i of every evaluation (and of
    every run with the same settings) is drawn with the same random numbers: results pair by sample index.

    Args:
        reward: The reward (lit_pref.TaskReward, lit_pref.RewardModelScorer, lit_pref.CallableReward, ...).
        prompts: Prompt source (like data.val: file, task:<name>, ...); default: the data module's validation
            (else training) prompts.
        num_prompts: How many held-out prompts (the first N; the same at every evaluation).
        every_n_steps: Steps between evaluations.
        batch_size: Prompts per generate call.
        sampling: Generation settings (default: max_new_tokens 32, temperature 1.0, which keeps
            `eval/kl_to_ref` unbiased; seeded, so evaluations differ only by the policy).
        compare_to_start: Keep a frozen copy of the starting policy for win rate and KL (costs one model copy).
        num_text_samples: Samples shown under eval/samples.
        summary: Print reward before -> after and sample responses at the end of fit.
        degenerate_warning: Warn when more than this fraction of the samples is degenerate.
        kl_warning: Warn when the KL to the starting policy exceeds this many nats (likelihood displacement,
            word salad).
        unconditional: Sample `num_prompts` texts from the empty prompt instead of answering prompt rows (see
            above); `prompts` must then be unset.
    """

    def __init__(
        self,
        reward: Reward,
        prompts: str | None = None,
        num_prompts: int = 64,
        every_n_steps: int = 50,
        batch_size: int = 32,
        sampling: SamplingConfig | None = None,
        compare_to_start: bool = True,
        num_text_samples: int = 4,
        summary: bool = False,
        degenerate_warning: float = 0.1,
        kl_warning: float = 10.0,
        unconditional: bool = False,
    ):
        super().__init__(every_n_steps)
        for name, value, bound in (("num_prompts", num_prompts, 1), ("batch_size", batch_size, 1),
                                   ("num_text_samples", num_text_samples, 0), ("kl_warning", kl_warning, 0)):  # fmt: skip
            check_range(f"RewardEvaluation.{name}", value, ge=bound)
        check_range("RewardEvaluation.degenerate_warning", degenerate_warning, ge=0, le=1)
        if unconditional and prompts is not None:
            raise ConfigError(
                f"RewardEvaluation: unconditional samples from the empty prompt, so prompts ({prompts!r}) must be "
                "unset: drop one of the two options"
            )
        self.reward = reward
        self.prompt_source = prompts
        self.num_prompts = num_prompts
        self.batch_size = batch_size
        self.sampling = sampling or SamplingConfig(max_new_tokens=32)
        self.compare_to_start = compare_to_start
        self.num_text_samples = num_text_samples
        self.summary = summary
        self.degenerate_warning = degenerate_warning
        self.kl_warning = kl_warning
        self.unconditional = unconditional
        self.history: list[dict] = []  # one entry per evaluation: step, metrics, samples
        self._prompts = None
        self._start: CompanionModel | None = None
        self._start_rewards: list[float] | None = None

    def setup(self, trainer: pl.Trainer, module, stage: str) -> None:
        if stage == "fit" and self.compare_to_start:
            self._start = module.add_companion(START_COMPANION, FrozenCopy())

    # -- sampling -----------------------------------------------------------------------------------------
    def _sample(self, module, model=None):
        return module.sample(self._prompts, self.sampling, model=model, batch_size=self.batch_size)

    def _kl(self, module, completions: list[list[int]]) -> list[float]:
        """Each sample's log pi(y|x) - log pi_start(y|x): the KL estimate's terms, one per prompt."""
        start = self._start

        def log_ratio(batch):
            return sequence_logps(module.policy, batch).sum - start.token_logps(batch).sum

        ratios = map_sequences(log_ratio, self._prompts, completions, module.tokenizer.pad_token_id,
                               self.batch_size, module.device)  # fmt: skip
        return ratios.tolist()

    # -- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, trainer: pl.Trainer, module) -> dict:
        was_training = module.policy.training
        module.policy.eval()
        try:
            return self._evaluate(trainer, module)
        finally:
            module.policy.train(was_training)

    def _evaluate(self, trainer: pl.Trainer, module) -> dict:
        out = self._sample(module)
        rewards = self.reward(self._prompt_texts, out.texts).tolist()
        reasons = [degenerate_reason(t) for t in out.texts]
        metrics = {
            "eval/reward_mean": statistics.fmean(rewards),
            "eval/reward_std": statistics.pstdev(rewards),
            "eval/response_length": statistics.fmean(len(c) for c in out.completions),
            "eval/degenerate_fraction": sum(r is not None for r in reasons) / len(reasons),
        }
        per_prompt = {"reward": rewards, "length": [len(c) for c in out.completions],
                      "degenerate": [int(r is not None) for r in reasons], "response": out.texts}  # fmt: skip
        if self._start_rewards is not None:
            wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards, self._start_rewards)]
            per_prompt.update(win=wins, kl=self._kl(module, out.completions))
            metrics["eval/win_rate_vs_ref"] = statistics.fmean(wins)
            metrics["eval/kl_to_ref"] = statistics.fmean(per_prompt["kl"])
        samples = list(zip(self._prompt_texts, out.texts, rewards))[: self.num_text_samples]
        degenerate = {k: reasons.count(k) for k in DEGENERATE_REASONS if k in reasons}
        examples = [(p, t, r) for p, t, r in zip(self._prompt_texts, out.texts, reasons) if r]
        examples = examples[: self.num_text_samples]
        warnings = self.collapse_warnings(metrics, degenerate)
        self.history.append({"step": trainer.global_step, **metrics, "degenerate": degenerate,
                             "degenerate_examples": examples, "warnings": warnings, "samples": samples,
                             "per_prompt": per_prompt})  # fmt: skip
        if warnings:
            rank_zero_warn(f"lit_pref: RewardEvaluation at step {trainer.global_step}: " + " ".join(warnings))
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
        for writer in text_loggers(trainer):
            writer.add_text("eval/samples", markdown_table(["prompt", "response", "reward"], samples),
                            trainer.global_step)  # fmt: skip
        self._write_history(trainer)
        return metrics

    on_period = evaluate

    def collapse_warnings(self, metrics: dict, degenerate: dict[str, int]) -> list[str]:
        """What looks collapsed in one evaluation: too many degenerate samples, a KL to the start too large."""
        warnings = []
        fraction = metrics["eval/degenerate_fraction"]
        if fraction > self.degenerate_warning:
            kinds = ", ".join(f"{n} {DEGENERATE_REASONS[k]}" for k, n in degenerate.items())
            warnings.append(
                f"{fraction:.0%} of the samples are degenerate ({kinds}; more than degenerate_warning = "
                f"{self.degenerate_warning:g}): the policy has likely collapsed (over-optimization)."
            )
        kl = metrics.get("eval/kl_to_ref")
        if kl is not None and kl > self.kl_warning:
            warnings.append(
                f"KL to the starting policy is {kl:.1f} nats (more than kl_warning = {self.kl_warning:g}): "
                "likely likelihood displacement or word salad."
            )
        if warnings:
            warnings.append("Lower the learning rate, raise beta or train fewer steps.")
        return warnings

    def _write_history(self, trainer: pl.Trainer) -> None:
        """Every evaluation so far (metrics, warnings, the shown samples) as JSON in the run's log folder."""
        if not trainer.is_global_zero or not trainer.log_dir:
            return
        path = Path(trainer.log_dir) / "reward_evaluation.json"
        text = json.dumps({"num_prompts": len(self._prompts), "unconditional": self.unconditional,
                           "evaluations": self.history}, indent=1)  # fmt: skip
        atomic_write(path, lambda tmp: tmp.write_text(text))

    def on_fit_start(self, trainer: pl.Trainer, module) -> None:
        if self.unconditional:  # the empty prompt, rendered as rows without a prompt are
            self._prompts = [trainer.datamodule.renderer().prompt_ids("")] * self.num_prompts
            self._prompt_texts = [""] * self.num_prompts
        else:
            rows = trainer.datamodule.prompt_rows(self.prompt_source)
            rows = rows.select(range(min(self.num_prompts, len(rows))))
            self._prompts = [r["prompt_ids"] for r in rows]
            self._prompt_texts = [json.loads(r["prompt_text"]) for r in rows]
        if self._start is not None:
            texts = self._sample(module, self._start.sampling_model()).texts
            self._start_rewards = self.reward(self._prompt_texts, texts).tolist()
        self.evaluate(trainer, module)

    def on_fit_end(self, trainer, module) -> None:
        if self.history and self.history[-1]["step"] != trainer.global_step:
            self.evaluate(trainer, module)
        if self._start is not None:
            self._start.release()  # the starting policy's copy is not needed after fit
        if self.summary and trainer.is_global_zero:
            print(self.summary_text(trainer))

    def summary_text(self, trainer: pl.Trainer) -> str:
        first, last = self.history[0], self.history[-1]
        sampled = "unconditional samples" if self.unconditional else "held-out prompts"
        lines = [
            "",
            "=" * 72,
            f"reward on {len(self._prompts)} {sampled}: {first['eval/reward_mean']:+.3f} (step {first['step']}) "
            f"-> {last['eval/reward_mean']:+.3f} (step {last['step']})",
        ]
        if "eval/win_rate_vs_ref" in last:
            lines.append(
                f"win rate vs the starting policy: {last['eval/win_rate_vs_ref']:.2f}   "
                f"KL to it: {last['eval/kl_to_ref']:.2f} nats"
            )
        lines.append(
            f"degenerate samples: {last['eval/degenerate_fraction']:.0%} (empty, no letter or digit, one word "
            "repeated, looping)"
        )
        for title, entry in (("before", first), ("after", last)):
            lines.append(f"samples {title}:")
            lines += [
                f"  [{v:+.2f}] {p if isinstance(p, str) else p[-1]['content']} -> {r}"
                for p, r, v in entry["samples"][:3]
            ]
        exporter = next((cb for cb in trainer.callbacks if getattr(cb, "exported_to", None)), None)
        if exporter is not None:
            lines.append(f"exported model: {exporter.exported_to}")
        if trainer.log_dir:
            lines.append(
                f"TensorBoard logs: {trainer.log_dir}   ->   tensorboard --logdir {trainer.logger.save_dir}"
            )
        if last["warnings"]:
            lines += ["!" * 72, "WARNING: " + " ".join(last["warnings"]), "!" * 72]
        lines.append("=" * 72)
        return "\n".join(lines)
