"""`builtin:<size>-sft-<task>` and `builtin:<size>-dpo-<task>`: a built-in model after SFT on a task's
demonstrations, and that SFT model after DPO on the task's preference pairs.

Preference methods start from an SFT model; WSPO also needs a weak model after alignment. A recipe is a settings
dict (`sft_recipe`, `dpo_recipe`: the method's options, the data options, the steps, the seed), trained by
`train_and_export`; the settings name the model's cache folder (lit_pref.models.artifacts), and the ones the
tests and the demo start from ship with lit_pref as files (the same bytes on every machine).
`task:constraints` trains on its three PRS formats (lit_pref.builtin.reflection) instead of its demonstrations.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

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
TASK_RECIPES = {
    "constraints": {"max_length": 200, "max_prompt_length": 180, "batch_size": 16, "group_by_length": True,
                    "steps": 400},
    # listops is learnt late: held-out exact match is 2% after 1000 of 4000 cosine steps, 16% after 2000, 43% at
    # the end (good, imperfect); a 3000-step schedule ends at 16%
    "listops": {"steps": 4000},
}  # fmt: skip


def split_name(name: str, stage: str) -> tuple[str, str]:
    base, task = name.split(stage)
    if task not in TASKS:
        raise ConfigError(f"unknown built-in model 'builtin:{name}': the tasks are {sorted(TASKS)}")
    return base, task


def _data_settings(base: str, task: str, sft: bool) -> tuple[dict, int]:
    """(PreferenceDataModule options, training steps) of a recipe."""
    defaults = TOKENIZER_SETTINGS[TOKENIZER_OF[base]]
    settings = {"max_length": defaults["max_length"], "max_prompt_length": defaults["max_prompt_length"],
                "batch_size": 32, "steps": defaults["sft_steps" if sft else "dpo_steps"],
                **(TASK_RECIPES.get(task, {}) if sft else {})}  # fmt: skip
    steps = settings.pop("steps")
    return {"tokenizer": TOKENIZER_OF[base], "format": "demonstration" if sft else "pairwise",
            "task_options": {"num_rows": 4000}, "text_as_chat": True, **settings}, steps  # fmt: skip


def sft_recipe(name: str) -> dict:
    """The settings of `builtin:<base>-sft-<task>`: SFT of builtin:<base> on the task's demonstrations."""
    base, task = split_name(name, "-sft-")
    data, steps = _data_settings(base, task, sft=True)
    # max_logits_elements None: the plain log-prob path, as when the first models were recorded
    module = {"policy": f"builtin:{base}", "lr": 1.5e-3 if base == "tiny-large" else 3e-3, "warmup_steps": 20,
              "lr_schedule": "cosine", "max_logits_elements": None}  # fmt: skip
    return {"method": "SFT", "task": task, "module": module, "data": data, "steps": steps, "seed": 0}


def dpo_recipe(name: str) -> dict:
    """The settings of `builtin:<base>-dpo-<task>`: DPO of builtin:<base>-sft-<task> on the task's pairs."""
    base, task = split_name(name, "-dpo-")
    data, steps = _data_settings(base, task, sft=False)
    # prefix_sharing off: the layout the artifact was recorded with
    module = {"policy": f"builtin:{base}-sft-{task}", "beta": 0.1, "lr": 2e-4, "warmup_steps": 10,
              "prefix_sharing": False}  # fmt: skip
    return {"method": "DPO", "task": task, "module": module, "data": data, "steps": steps, "seed": 0}


def build_tiny_sft(folder: Path, name: str) -> Path:
    return train_and_export(folder, name, sft_recipe(name))


def build_tiny_dpo(folder: Path, name: str) -> Path:
    return train_and_export(folder, name, dpo_recipe(name))


def train_and_export(folder: Path, name: str, recipe: dict) -> Path:
    """Seeded: fit the recipe's method on its task's rows and export the policy to `folder`."""
    import lightning.pytorch as pl
    import torch

    from lit_pref.algorithms import DPO, SFT
    from lit_pref.callbacks.export import export_module
    from lit_pref.data.datamodule import PreferenceDataModule

    print(f"lit_pref: building builtin:{name} ({recipe['steps']} {recipe['method']} steps; first use only)")
    method = {"SFT": SFT, "DPO": DPO}[recipe["method"]]
    with torch.random.fork_rng(), tempfile.TemporaryDirectory() as tmp:
        pl.seed_everything(recipe["seed"], verbose=False)
        data = PreferenceDataModule(train=_train_source(recipe, Path(tmp)), **recipe["data"])
        module = method(**recipe["module"])
        trainer = pl.Trainer(
            max_steps=recipe["steps"],
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(module, data)
    return export_module(module, folder)


def _train_source(recipe: dict, tmp: Path) -> str:
    task = recipe["task"]
    if task != "constraints" or recipe["method"] != "SFT":
        return f"task:{task}"
    import json

    from lit_pref.builtin.reflection import reflection_rows

    path = tmp / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reflection_rows(4000)))
    return str(path)
