"""`python -m lit_pref fit|validate|test|predict --config X.yaml`: LightningCLI with the algorithm in subclass mode."""

from __future__ import annotations

import os
import sys

from lightning.pytorch.cli import LightningCLI

from lit_pref.algorithms.base import PolicyModule
from lit_pref.data.datamodule import PreferenceDataModule

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "lit_pref"},
    },
}


class LitPrefCLI(LightningCLI):
    """The algorithm is chosen in YAML (`model: {class_path: lit_pref.DPO, init_args: ...}`); the data module
    is always the shared PreferenceDataModule, and its tokenizer and length limits are linked into the model."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.tokenizer", "model.init_args.tokenizer")
        parser.link_arguments("data.max_length", "model.init_args.max_length")
        parser.link_arguments("data.max_prompt_length", "model.init_args.max_prompt_length")


def main(args: list[str] | None = None) -> LitPrefCLI:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lit_pref.errors import LitPrefError

    try:
        return LitPrefCLI(
            PolicyModule,
            PreferenceDataModule,
            subclass_mode_model=True,
            save_config_kwargs={"overwrite": True},
            trainer_defaults=TRAINER_DEFAULTS,
            args=args,
        )
    except LitPrefError as exc:  # a user-fixable problem: say it plainly, no traceback
        print(f"lit_pref error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
