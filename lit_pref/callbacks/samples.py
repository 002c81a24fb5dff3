"""Log a few sampled generations to TensorBoard as text every N steps."""

from __future__ import annotations

import json

import lightning.pytorch as pl

from lit_pref.callbacks.periodic import PeriodicCallback
from lit_pref.errors import check_range
from lit_pref.sampling import SamplingConfig


def text_loggers(trainer: pl.Trainer):
    return [lg.experiment for lg in trainer.loggers if hasattr(getattr(lg, "experiment", None), "add_text")]


def markdown_table(header: list[str], rows: list[tuple]) -> str:
    """A markdown table for TensorBoard's text tab; strings are JSON-escaped so newlines stay visible."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return json.dumps(value)[1:-1] if isinstance(value, str) else json.dumps(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


class GenerationSamples(PeriodicCallback):
    """Every `every_n_steps` training steps (and at the end of fit), sample responses to the first
    `num_prompts` validation prompts (training prompts if there is no validation split) and log them
    under `samples/generations`.

    Args:
        every_n_steps: Steps between two logs.
        num_prompts: Prompts sampled each time (the same ones every time, so logs are comparable).
        sampling: Generation settings (seeded, so two logs differ only by the policy; do_sample: false = greedy).
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        num_prompts: int = 4,
        sampling: SamplingConfig | None = None,
    ):
        super().__init__(every_n_steps)
        check_range("GenerationSamples.num_prompts", num_prompts, ge=1)
        self.num_prompts = num_prompts
        self.sampling = sampling or SamplingConfig(max_new_tokens=48, temperature=0.7)

    def _prompts(self, trainer) -> list[list[int]]:
        datasets = trainer.datamodule.datasets
        ds = datasets.get("val") or datasets["train"]
        return [row["prompt_ids"] for row in ds.select(range(min(self.num_prompts, len(ds))))]

    def sample(self, trainer: pl.Trainer, module) -> list[tuple[str, str]]:
        prompts = self._prompts(trainer)
        out = module.sample(prompts, self.sampling)  # every rank: generation is collective under sharding
        decode = module.tokenizer.decode
        return [(decode(p, skip_special_tokens=False), text) for p, text in zip(prompts, out.texts)]

    def on_period(self, trainer, module) -> None:
        pairs = self.sample(trainer, module)
        if not trainer.is_global_zero:
            return
        for writer in text_loggers(trainer):
            writer.add_text(
                "samples/generations", markdown_table(["prompt", "response"], pairs), trainer.global_step
            )

    def on_fit_end(self, trainer, module) -> None:
        self.on_period(trainer, module)
