"""The Lightning subcommands (fit, validate, test, predict): LightningCLI with the algorithm in subclass mode."""

from __future__ import annotations

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
        parser.link_arguments("data.text_as_chat", "model.init_args.text_as_chat")


def cli_instances(args: list[str]):
    """(model, datamodule, trainer) built from config arguments exactly as `fit` builds them, without running."""
    import warnings

    with warnings.catch_warnings():  # `args` is meant to replace the command line here
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = LitPrefCLI(
            PolicyModule,
            PreferenceDataModule,
            subclass_mode_model=True,
            trainer_defaults=TRAINER_DEFAULTS,
            args=args,
            run=False,
            save_config_callback=None,
        )
    return cli.model, cli.datamodule, cli.trainer


DESCRIPTION = (
    "lit_pref: preference optimization on PyTorch Lightning. Subcommands fit, validate, test, predict (pick the "
    "algorithm with --model or a config); also `python -m lit_pref data --task reviews --format pairwise --out DIR` "
    "writes a built-in task's rows as JSONL, and `python -m lit_pref crossfit --config X.yaml --out DIR` writes "
    "outcome-model predictions and base-model samples for CausalPO (see --help of each)."
)


def main(args: list[str] | None) -> LitPrefCLI:
    return LitPrefCLI(
        PolicyModule,
        PreferenceDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": DESCRIPTION},
        trainer_defaults=TRAINER_DEFAULTS,
        args=args,
    )
