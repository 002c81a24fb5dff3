"""The Lightning subcommands (fit, validate, test, predict): LightningCLI with the algorithm in subclass mode."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from lit_pref.algorithms.base import PolicyModule
from lit_pref.callbacks.divergence import DivergenceGuard
from lit_pref.callbacks.resume import ResumedSettings, RunRecord
from lit_pref.checkpoints import use_atomic_checkpoints, verify_checkpoint
from lit_pref.commands.resume import (
    check_output_folders,
    check_same_run,
    keep_csv_logs,
    newest_sound_checkpoint,
    read_run_record,
    run_settings,
)
from lit_pref.data.datamodule import PreferenceDataModule
from lit_pref.data.needs import LINKED_SETTINGS
from lit_pref.errors import ConfigError

#: `ckpt_path` values that are not files: Lightning resolves them itself ("last" is lit_pref's --resume)
SPECIAL_CKPT_PATHS = ("best", "hpc", "registry")

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "runs", "name": "lit_pref"},
    },
}


class LitPrefCLI(LightningCLI):
    """The algorithm is chosen in YAML (`model: {class_path: lit_pref.DPO, init_args: ...}`); the data module
    is always the shared PreferenceDataModule, and its tokenizer and length limits are linked into the model.

    Every run also gets: atomic, verified checkpoints (lit_pref.AtomicCheckpointIO), a DivergenceGuard (set under
    `divergence:`), its settings recorded in each checkpoint, and its output folders checked before it starts."""

    #: (checkpoint, changed settings, its RunRecord) when `fit` resumes; set by before_instantiate_classes
    _resumed: tuple[str, dict, dict | None] | None = None
    _random_seed = False

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(DivergenceGuard, "divergence")
        for key in LINKED_SETTINGS:  # the data owns them; PolicyModule.setup copies the same for Python users
            parser.link_arguments(f"data.{key}", f"model.init_args.{key}")
        parser.add_argument(
            "--resume",
            type=bool,
            default=False,
            help="Continue this run (the logger's save_dir/name) from its newest checkpoint, logging into the same "
            "version folder; starts from step 0 (and says so) when the run has no checkpoint yet. "
            "`--ckpt_path last` does the same. Damaged checkpoints are skipped (each named); settings that change "
            "the run's trajectory must be the run's, unless --resume_with_changes.",
        )
        parser.add_argument(
            "--resume_with_changes",
            type=bool,
            default=False,
            help="With --resume or --ckpt_path: continue although settings that change the trajectory (optimizer, "
            "data, method options) differ from the checkpoint's; the new values apply from the resumed step "
            "(learning rate and weight decay included) and are logged to the run's resumes.jsonl.",
        )

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else self.config
        # seed_everything: true means "pick one"; a resumed run then reuses the one its checkpoint recorded
        self._random_seed = config is not None and config.get("seed_everything") is True

    def _parse_ckpt_path(self) -> None:
        """Lightning torch.loads an explicit ckpt_path here (unchecked) and, for every subcommand, merges its
        hyper-parameters over the config. lit_pref verifies the file first (a damaged one is named), and for `fit`
        compares the checkpoint's recorded settings with the config instead (before_instantiate_classes): the
        config is the run's, and a changed value is refused or, with --resume_with_changes, really applied."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in (*SPECIAL_CKPT_PATHS, "last"):
            verify_checkpoint(path)
        if subcommand != "fit":
            super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is None:
            return
        resume, allow = config.pop("resume", False), config.pop("resume_with_changes", False)
        if self.subcommand != "fit":
            return
        if resume or config.get("ckpt_path") == "last":
            resume_newest(config)  # the newest sound one (an explicit path was verified in _parse_ckpt_path)
        path = config.get("ckpt_path")
        if path and path not in SPECIAL_CKPT_PATHS:
            record = read_run_record(Path(path))
            self._reuse_seed(config, record)
            changes = check_same_run(record, self._settings(config), Path(path), allow)
            self._resumed = (path, changes, record)

    def _settings(self, config) -> dict:
        return run_settings(config.clone().as_dict())

    def _reuse_seed(self, config, record: dict | None) -> None:
        seed = (record or {}).get("config", {}).get("seed_everything")
        if self._random_seed and isinstance(seed, int) and not isinstance(seed, bool):
            from lightning.pytorch import seed_everything

            config.seed_everything = seed_everything(seed, workers=True)

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        check_output_folders(trainer)
        use_atomic_checkpoints(trainer)
        use_step_progress_bar(trainer)
        if self.subcommand != "fit":
            return trainer
        resumes = []
        if self._resumed is not None:
            checkpoint, changes, record = self._resumed
            keep_csv_logs(trainer)
            resumes = list((record or {}).get("resumes", []))
            if changes:
                resumes.append({"checkpoint": checkpoint, "changes": changes})
                trainer.callbacks.append(ResumedSettings(changes, checkpoint))
        trainer.callbacks.append(RunRecord(self._settings(self.config[self.subcommand]), resumes))
        return trainer


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
    """Point `ckpt_path` at the newest sound checkpoint under the run folder (damaged newer ones are skipped, each
    named in a warning) and log into its version folder."""
    folder = run_folder(config)
    newest = newest_sound_checkpoint(folder)
    if newest is None:
        print(
            f"lit_pref: --resume found no checkpoint under {folder}/version_*/checkpoints: starting at step 0"
        )
        config.ckpt_path = None
        return
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
