"""Sample from the policy on held-out prompts and score the samples with a reward, every N steps."""

from __future__ import annotations

import json
import statistics

import lightning.pytorch as pl
import torch

from lit_pref.callbacks.samples import text_loggers
from lit_pref.data.collate import sequences_batch
from lit_pref.errors import check_range
from lit_pref.models.companions import frozen_copy_of_policy
from lit_pref.models.logprobs import sequence_logps
from lit_pref.rewards import Reward


class RewardEvaluation(pl.Callback):
    """Every `every_n_steps` steps (and before training and at its end), generate one response per held-out
    prompt and log:

    - `eval/reward_mean`, `eval/reward_std`: the reward of the policy's samples;
    - `eval/win_rate_vs_ref`: how often the policy's sample beats the starting policy's sample for the same
      prompt under the reward (ties count 1/2);
    - `eval/kl_to_ref`: sample estimate of KL(policy || starting policy), the mean of sum_t log pi/pi_start over
      the policy's samples (an unbiased estimate at temperature 1);
    - `eval/response_length`: mean generated tokens;
    - `eval/samples` (TEXT): a few prompts with the response and its reward.

    The "reference" here is the policy as it was when fit started (for DPO, its reference model).

    Args:
        reward: The reward (lit_pref.TaskReward, lit_pref.RewardModelScorer, lit_pref.CallableReward, ...).
        prompts: Prompt source (like data.val: file, task:<name>, ...); default: the data module's validation
            (else training) prompts.
        num_prompts: How many held-out prompts (the first N; the same at every evaluation).
        every_n_steps: Steps between evaluations.
        batch_size: Prompts per generate call.
        max_new_tokens: Generation limit.
        temperature: Sampling temperature (1.0 keeps `eval/kl_to_ref` unbiased).
        seed: Sampling seed, so evaluations differ only by the policy.
        compare_to_start: Keep a frozen copy of the starting policy for win rate and KL (costs one model copy).
        num_text_samples: Samples shown under eval/samples.
        summary: Print reward before -> after and sample responses at the end of fit.
    """

    def __init__(
        self,
        reward: Reward,
        prompts: str | None = None,
        num_prompts: int = 64,
        every_n_steps: int = 50,
        batch_size: int = 32,
        max_new_tokens: int = 32,
        temperature: float = 1.0,
        seed: int = 0,
        compare_to_start: bool = True,
        num_text_samples: int = 4,
        summary: bool = False,
    ):
        for name, value, bounds in (("num_prompts", num_prompts, {"ge": 1}), ("every_n_steps", every_n_steps, {"ge": 1}),
                                    ("batch_size", batch_size, {"ge": 1}), ("max_new_tokens", max_new_tokens, {"ge": 1}),
                                    ("temperature", temperature, {"gt": 0}),
                                    ("num_text_samples", num_text_samples, {"ge": 0})):  # fmt: skip
            check_range(f"RewardEvaluation.{name}", value, **bounds)
        self.reward = reward
        self.prompt_source = prompts
        self.num_prompts = num_prompts
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.compare_to_start = compare_to_start
        self.num_text_samples = num_text_samples
        self.summary = summary
        self.history: list[dict] = []  # one entry per evaluation: step, metrics, samples
        self._prompts = None
        self._start_model = None
        self._start = None  # (responses, rewards) of the starting policy

    # -- sampling -----------------------------------------------------------------------------------------
    def _sample(self, module, model=None) -> tuple[list[list[int]], list[str]]:
        """Completion ids and texts for every eval prompt, from `model` (default: the policy)."""
        ids = module.complete(
            self._prompts, self.batch_size, self.seed, max_new_tokens=self.max_new_tokens,
            temperature=self.temperature, model=model,
        )  # fmt: skip
        return ids, module.decode_completions(ids)

    @torch.no_grad()
    def _kl(self, module, completions: list[list[int]]) -> float:
        pad = module.tokenizer.pad_token_id
        total = []
        for start in range(0, len(completions), self.batch_size):
            batch = sequences_batch(
                self._prompts[start : start + self.batch_size],
                completions[start : start + self.batch_size],
                pad,
            )
            batch = {k: v.to(module.device) for k, v in batch.items()}
            total += (
                sequence_logps(module.policy, batch).sum - sequence_logps(self._start_model, batch).sum
            ).tolist()
        return statistics.fmean(total)

    # -- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, trainer: pl.Trainer, module) -> dict:
        was_training = module.policy.training
        module.policy.eval()
        try:
            completions, texts = self._sample(module)
            rewards = self.reward(self._prompt_texts, texts).tolist()
            metrics = {
                "eval/reward_mean": statistics.fmean(rewards),
                "eval/reward_std": statistics.pstdev(rewards),
                "eval/response_length": statistics.fmean(len(c) for c in completions),
            }
            if self._start_model is not None:
                start_rewards = self._start[1]
                wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards, start_rewards)]
                metrics["eval/win_rate_vs_ref"] = statistics.fmean(wins)
                metrics["eval/kl_to_ref"] = self._kl(module, completions)
        finally:
            module.policy.train(was_training)
        samples = list(zip(self._prompt_texts, texts, rewards))[: self.num_text_samples]
        self.history.append({"step": trainer.global_step, **metrics, "samples": samples})
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=trainer.global_step)
        table = "| prompt | response | reward |\n|---|---|---|\n" + "\n".join(
            f"| {json.dumps(p)[1:-1] if isinstance(p, str) else json.dumps(p)} | {json.dumps(r)[1:-1]} | {v:.3f} |"
            for p, r, v in samples
        )
        for writer in text_loggers(trainer):
            writer.add_text("eval/samples", table, trainer.global_step)
        return metrics

    def on_fit_start(self, trainer: pl.Trainer, module) -> None:
        rows = trainer.datamodule.prompt_rows(self.prompt_source)
        rows = rows.select(range(min(self.num_prompts, len(rows))))
        self._prompts = [r["prompt_ids"] for r in rows]
        self._prompt_texts = [json.loads(r["prompt_text"]) for r in rows]
        if self.compare_to_start:
            self._start_model = frozen_copy_of_policy(module.policy)
            _, texts = self._sample(module, self._start_model)
            self._start = (texts, self.reward(self._prompt_texts, texts).tolist())
        self.evaluate(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0 and trainer.global_step > 0:
            self.evaluate(trainer, module)

    def on_fit_end(self, trainer, module) -> None:
        if self.history and self.history[-1]["step"] != trainer.global_step:
            self.evaluate(trainer, module)
        self._start_model = None
        if self.summary and trainer.is_global_zero:
            print(self.summary_text(trainer))

    def summary_text(self, trainer: pl.Trainer) -> str:
        first, last = self.history[0], self.history[-1]
        lines = [
            "",
            "=" * 72,
            f"reward on {len(self._prompts)} held-out prompts: {first['eval/reward_mean']:+.3f} (step {first['step']}) "
            f"-> {last['eval/reward_mean']:+.3f} (step {last['step']})",
        ]
        if "eval/win_rate_vs_ref" in last:
            lines.append(
                f"win rate vs the starting policy: {last['eval/win_rate_vs_ref']:.2f}   "
                f"KL to it: {last['eval/kl_to_ref']:.2f} nats"
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
        lines.append("=" * 72)
        return "\n".join(lines)
