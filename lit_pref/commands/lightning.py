"""The Lightning subcommands (fit, validate, test, predict): LightningCLI with the algorithm in subclass mode."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from lit_pref.algorithms.base import PolicyModule
from lit_pref.data.datamodule import PreferenceDataModule
from lit_pref.errors import ConfigError

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
        parser.add_argument(
            "--resume",
            type=bool,
            default=False,
            help="Continue this run (the logger's save_dir/name) from its newest checkpoint, logging into the same "
            "version folder; starts from step 0 (and says so) when the run has no checkpoint yet. "
            "`--ckpt_path last` does the same.",
        )

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        use_step_progress_bar(trainer)
        return trainer

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is None:
            return
        resume = config.pop("resume", False)
        if self.subcommand == "fit" and (resume or config.get("ckpt_path") == "last"):
            resume_newest(config)


def use_step_progress_bar(trainer) -> None:
    """Lightning's default rich bar shows "Epoch 1/-2" in a `max_steps` run: use lit_pref's StepProgressBar."""
    from lightning.pytorch.callbacks import RichProgressBar

    from lit_pref.callbacks.progress import StepProgressBar

    bar = trainer.progress_bar_callback
    if type(bar) is RichProgressBar:
        trainer.callbacks[trainer.callbacks.index(bar)] = StepProgressBar()


def run_folder(config) -> Path:
    """The folder of a run's versions: the logger's save_dir/name (TensorBoardLogger, CSVLogger)."""
    logger = config.trainer.logger
    if isinstance(logger, list) and logger:
        logger = logger[0]
    args = getattr(logger, "init_args", None) if logger not in (None, True, False) else None
    if args is None or args.get("save_dir") is None:
        raise ConfigError(
            "--resume (or --ckpt_path last) finds the run by its logger's save_dir and name: set "
            "trainer.logger (e.g. lightning.pytorch.loggers.TensorBoardLogger with save_dir and name), or give "
            "--ckpt_path PATH/TO/FILE.ckpt"
        )
    return Path(args["save_dir"]) / (args.get("name") or "")


def resume_newest(config) -> None:
    """Point `ckpt_path` at the newest checkpoint under the run folder and log into its version folder."""
    folder = run_folder(config)
    checkpoints = sorted(folder.glob("version_*/checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    if not checkpoints:
        print(
            f"lit_pref: --resume found no checkpoint under {folder}/version_*/checkpoints: starting at step 0"
        )
        config.ckpt_path = None
        return
    newest = checkpoints[-1]
    version = newest.parent.parent.name
    logger = config.trainer.logger[0] if isinstance(config.trainer.logger, list) else config.trainer.logger
    logger.init_args["version"] = version
    config.ckpt_path = str(newest)
    print(f"lit_pref: resuming from {newest} (logging into {folder / version})")


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
