"""`builtin:<size>-sft-<task>` and `builtin:<size>-dpo-<task>`: a built-in model after SFT on a task's
demonstrations, and that SFT model after DPO on the task's preference pairs; built on first use.

Preference methods start from an SFT model; WSPO also needs a weak model after alignment. These recipes make them
in under a minute each on CPU (seeded, so every machine builds the same weights), show a progress bar, and cache
the result as a standard Hugging Face folder next to `builtin:tiny`. `task:constraints` trains on its three PRS
formats (lit_pref.builtin.reflection) instead of its demonstrations.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

from lit_pref.algorithms.dpo import DPO
from lit_pref.algorithms.sft import SFT
from lit_pref.callbacks.export import export_module
from lit_pref.data.datamodule import PreferenceDataModule
from lit_pref.errors import ConfigError
from lit_pref.models.tiny import TOKENIZER_OF
from lit_pref.tasks import TASKS

#: per tokenizer: lengths, SFT steps and DPO steps. SmolLM2's chat template adds a ~30-token system prompt, and
#: its 49k-token vocabulary makes a step of the 7 M tiny-smollm2 ~4x dearer than tiny's
TOKENIZER_SETTINGS = {
    "builtin:tiny": {"max_length": 48, "max_prompt_length": 24, "sft_steps": 300, "dpo_steps": 60},
    "builtin:smollm2-135m": {"max_length": 64, "max_prompt_length": 48, "sft_steps": 150, "dpo_steps": 40},
}
#: SFT data and step settings that differ from the default recipe, per task
TASK_RECIPES = {"constraints": {"max_length": 200, "max_prompt_length": 180, "batch_size": 16,
                                "group_by_length": True, "steps": 400},
                # listops is learnt late: held-out exact match is 2% after 1000 of 4000 cosine steps, 16% after
                # 2000, 43% at the end (good, imperfect); a 3000-step schedule ends at 16%
                "listops": {"steps": 4000}}  # fmt: skip


def build_tiny_sft(folder: Path, name: str) -> Path:
    """Train builtin:<base> on task:<task>'s demonstrations (`name` = '<base>-sft-<task>') and export it to `folder`."""
    base, task = split_name(name, "-sft-")
    module = partial(
        SFT,
        policy=f"builtin:{base}",
        lr=1.5e-3 if base == "tiny-large" else 3e-3,
        warmup_steps=20,
        lr_schedule="cosine",
        max_logits_elements=None,  # the plain log-prob path, as when v1 was recorded: the artifact stays bit-stable
    )
    return train_and_export(folder, name, module, base, task, "demonstration")


def build_tiny_dpo(folder: Path, name: str) -> Path:
    """DPO of builtin:<base>-sft-<task> on task:<task>'s pairs (`name` = '<base>-dpo-<task>'), exported to `folder`."""
    base, task = split_name(name, "-dpo-")
    # prefix_sharing off: the layout the artifact was recorded with, so it stays bit-stable on every machine
    module = partial(DPO, policy=f"builtin:{base}-sft-{task}", beta=0.1, lr=2e-4, warmup_steps=10,
                     prefix_sharing=False)  # fmt: skip
    return train_and_export(folder, name, module, base, task, "pairwise")


def split_name(name: str, stage: str) -> tuple[str, str]:
    base, task = name.split(stage)
    if task not in TASKS:
        raise ConfigError(f"unknown built-in model 'builtin:{name}': the tasks are {sorted(TASKS)}")
    return base, task


def train_and_export(folder: Path, name: str, make_module, base: str, task: str, row_format: str) -> Path:
    """Seeded: build the module with make_module(), fit it on task:<task>'s rows, export it to `folder`."""
    import lightning.pytorch as pl
    import torch

    print(f"lit_pref: building builtin:{name} (first use only; cached in {folder.parent})")
    tokenizer = TOKENIZER_OF[base]
    defaults = TOKENIZER_SETTINGS[tokenizer]
    sft = row_format == "demonstration"
    settings = {"max_length": defaults["max_length"], "max_prompt_length": defaults["max_prompt_length"],
                "batch_size": 32, "steps": defaults["sft_steps" if sft else "dpo_steps"],
                **(TASK_RECIPES.get(task, {}) if sft else {})}  # fmt: skip
    steps = settings.pop("steps")
    with torch.random.fork_rng(), tempfile.TemporaryDirectory() as tmp:
        pl.seed_everything(0, verbose=False)
        data = PreferenceDataModule(
            tokenizer=tokenizer,
            train=_train_source(task, Path(tmp)) if sft else f"task:{task}",
            format=row_format,
            task_options={"num_rows": 4000},
            text_as_chat=True,
            **settings,
        )
        module = make_module()
        trainer = pl.Trainer(
            max_steps=steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(module, data)
    return export_module(module, folder)


def _train_source(task: str, tmp: Path) -> str:
    if task != "constraints":
        return f"task:{task}"
    import json

    from lit_pref.builtin.reflection import reflection_rows

    path = tmp / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reflection_rows(4000)))
    return str(path)
