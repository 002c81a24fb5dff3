"""`builtin:<size>-sft-<task>`: a built-in model after SFT on a task's demonstrations, built on first use.

Preference methods start from an SFT model. This recipe makes one in under a minute on CPU (seeded, so every
machine builds the same weights), shows a progress bar, and caches the result as a standard Hugging Face folder
next to `builtin:tiny`. `task:constraints` trains on its three PRS formats (lit_pref.builtin.reflection) instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from lit_pref.algorithms.sft import SFT
from lit_pref.callbacks.export import export_module
from lit_pref.data.datamodule import PreferenceDataModule
from lit_pref.errors import ConfigError
from lit_pref.tasks import TASKS

SFT_STEPS = 300
#: data and step settings that differ from the default recipe, per task
TASK_RECIPES = {"constraints": {"max_length": 200, "max_prompt_length": 180, "batch_size": 16,
                                "group_by_length": True, "steps": 400}}  # fmt: skip


def build_tiny_sft(folder: Path, name: str) -> Path:
    """Train builtin:<base> on task:<task>'s demonstrations (`name` = '<base>-sft-<task>') and export it to `folder`."""
    import lightning.pytorch as pl
    import torch

    base, task = name.split("-sft-")
    if task not in TASKS:
        raise ConfigError(f"unknown built-in model 'builtin:{name}': the tasks are {sorted(TASKS)}")
    print(f"lit_pref: building builtin:{name} (first use only; cached in {folder.parent})")
    settings = {"max_length": 48, "max_prompt_length": 24, "batch_size": 32, "steps": SFT_STEPS,
                **TASK_RECIPES.get(task, {})}  # fmt: skip
    steps = settings.pop("steps")
    with torch.random.fork_rng(), tempfile.TemporaryDirectory() as tmp:
        pl.seed_everything(0, verbose=False)
        data = PreferenceDataModule(
            tokenizer="builtin:tiny",
            train=_train_source(task, Path(tmp)),
            format="demonstration",
            task_options={"num_rows": 4000},
            text_as_chat=True,
            **settings,
        )
        module = SFT(
            policy=f"builtin:{base}",
            lr=3e-3 if base == "tiny" else 1.5e-3,
            warmup_steps=20,
            lr_schedule="cosine",
            max_logits_elements=None,  # the plain log-prob path, as when v1 was recorded: the artifact stays bit-stable
        )
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
