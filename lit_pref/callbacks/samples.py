"""Log a few sampled generations to TensorBoard as text every N steps."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import torch

from lit_pref.errors import check_range


def text_loggers(trainer: pl.Trainer):
    return [lg.experiment for lg in trainer.loggers if hasattr(getattr(lg, "experiment", None), "add_text")]


class GenerationSamples(pl.Callback):
    """Every `every_n_steps` training steps (and at the end of fit), sample responses to the first
    `num_prompts` validation prompts (training prompts if there is no validation split) and log them
    under `samples/generations`.

    Args:
        every_n_steps: Steps between two logs.
        num_prompts: Prompts sampled each time (the same ones every time, so logs are comparable).
        max_new_tokens: Generation limit.
        temperature: Sampling temperature; 0 means greedy.
        seed: Seed of the sampling, so two logs differ only by the policy.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        num_prompts: int = 4,
        max_new_tokens: int = 48,
        temperature: float = 0.7,
        seed: int = 0,
    ):
        for name, value, bounds in (("every_n_steps", every_n_steps, {"ge": 1}), ("num_prompts", num_prompts, {"ge": 1}),
                                    ("max_new_tokens", max_new_tokens, {"ge": 1}),
                                    ("temperature", temperature, {"gt": 0})):  # fmt: skip
            check_range(f"GenerationSamples.{name}", value, **bounds)
        self.every_n_steps = every_n_steps
        self.num_prompts = num_prompts
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed

    def _prompts(self, trainer) -> list[list[int]]:
        datasets = trainer.datamodule.datasets
        ds = datasets.get("val") or datasets["train"]
        return [row["prompt_ids"] for row in ds.select(range(min(self.num_prompts, len(ds))))]

    def sample(self, trainer: pl.Trainer, module) -> list[tuple[str, str]]:
        prompts = self._prompts(trainer)
        greedy = self.temperature <= 0
        completions = module.complete(
            prompts,
            seed=self.seed,
            max_new_tokens=self.max_new_tokens,
            do_sample=not greedy,
            temperature=max(self.temperature, 1e-5),
        )
        decode = module.tokenizer.decode
        return [
            (decode(p, skip_special_tokens=False), decode(c, skip_special_tokens=False))
            for p, c in zip(prompts, completions)
        ]

    def _log(self, trainer, module) -> None:
        with torch.no_grad():
            pairs = self.sample(trainer, module)  # every rank: generation is collective under sharding
        if not trainer.is_global_zero:
            return
        table = "| prompt | response |\n|---|---|\n" + "\n".join(
            f"| {json.dumps(p)[1:-1]} | {json.dumps(r)[1:-1]} |" for p, r in pairs
        )
        for writer in text_loggers(trainer):
            writer.add_text("samples/generations", table, trainer.global_step)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step % self.every_n_steps == 0 and trainer.global_step > 0:
            self._log(trainer, module)

    def on_fit_end(self, trainer, module) -> None:
        self._log(trainer, module)
