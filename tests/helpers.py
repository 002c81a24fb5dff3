"""Small builders shared by the training tests: a data module and a trainer sized for 2 CPU cores."""

from __future__ import annotations

import tempfile

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

import lit_pref
from tests.conftest import DATA

_ROOT = tempfile.TemporaryDirectory(prefix="lit_pref_test_")  # removed when the test session ends


def data_module(
    kind: str = "pairs", max_rows: int = 96, batch_size: int = 16, **kwargs
) -> lit_pref.PreferenceDataModule:
    kwargs.setdefault("val", str(DATA / f"reviews_{kind}_val.jsonl"))
    return lit_pref.PreferenceDataModule(
        train=str(DATA / f"reviews_{kind}_train.jsonl"),
        text_as_chat=True,
        max_length=64,
        max_prompt_length=32,
        batch_size=batch_size,
        max_rows=max_rows,
        **kwargs,
    )


class Recorder(Callback):
    """Keeps (global_step, training loss, first row indices) of every step."""

    def __init__(self):
        self.steps: list[tuple[int, float, list[int]]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append((trainer.global_step, float(outputs["loss"]), batch["index"].tolist()[:4]))


def trainer(max_steps: int, callbacks=(), **kwargs) -> pl.Trainer:
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    # without a logger, Lightning writes (reward_evaluation.json, exports) under default_root_dir: not the repo
    kwargs.setdefault("default_root_dir", _ROOT.name)
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **kwargs,
    )


def fit_dpo_config_with(fragment: str, save_dir, steps: int = 2):
    """`python -m lit_pref fit --config configs/dpo.yaml --config configs/<fragment>` for `steps` steps, quietly."""
    from lit_pref.cli import main
    from tests.conftest import REPO

    return main(["fit", "--config", str(REPO / "configs/dpo.yaml"), "--config", str(REPO / "configs" / fragment),
                 "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
                 "--trainer.enable_progress_bar=false", "--trainer.callbacks=[]",
                 "--trainer.logger.init_args.save_dir", str(save_dir)])  # fmt: skip


CHECKPOINT_EVERY_2 = """
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {every_n_train_steps: 2, save_top_k: -1, save_last: true}
"""


def fit_cli(tmp_path, run: str, steps: int, *extra: str):
    """`fit` of configs/dpo.yaml on 80 rows (5 batches an epoch), a checkpoint every 2 steps, logs under
    tmp_path/run/dpo; bit-exact on resume (the plain layout, see tests/algorithms/test_checkpoint.py)."""
    from lit_pref.cli import main
    from tests.conftest import REPO

    every_2 = tmp_path / "every2.yaml"
    every_2.write_text(CHECKPOINT_EVERY_2)
    return main([
        "fit", "--config", str(REPO / "configs/dpo.yaml"), "--config", str(every_2),
        "--trainer.max_steps", str(steps), "--trainer.logger.init_args.save_dir", str(tmp_path / run),
        "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false", "--data.max_rows", "80",
        "--model.init_args.prefix_sharing", "false",
        *extra,
    ])  # fmt: skip
