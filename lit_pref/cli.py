"""`python -m lit_pref fit|validate|test|predict --config X.yaml`: LightningCLI with the algorithm in subclass mode."""

from __future__ import annotations

import os
import sys
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
        parser.add_argument(
            "--resume",
            type=bool,
            default=False,
            help="Continue this run (the logger's save_dir/name) from its newest checkpoint, logging into the same "
            "version folder; starts from step 0 (and says so) when the run has no checkpoint yet. "
            "`--ckpt_path last` does the same.",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is None:
            return
        resume = config.pop("resume", False)
        if self.subcommand == "fit" and (resume or config.get("ckpt_path") == "last"):
            resume_newest(config)


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


def write_task_data(argv: list[str]) -> None:
    """`python -m lit_pref data --task reviews --format pairwise --out DIR`: write a task's rows as JSONL."""
    import argparse
    import json
    from pathlib import Path

    from lit_pref.tasks import TASKS, get_task

    parser = argparse.ArgumentParser(prog="python -m lit_pref data", description=write_task_data.__doc__)
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="built-in task")
    parser.add_argument("--format", required=True, choices=["pairwise", "demonstration", "outcome", "prompt"])
    parser.add_argument("--out", required=True, help="folder for train.jsonl, val.jsonl and test.jsonl")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="task option, e.g. --option label_noise=0.1 (values are parsed as JSON)")  # fmt: skip
    ns = parser.parse_args(argv)
    options = {}
    for item in ns.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    task = get_task(ns.task, options)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        rows = task.rows(ns.format, split)
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} {ns.format} rows to {out / f'{split}.jsonl'}")


def main(args: list[str] | None = None) -> LitPrefCLI | None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    # Frozen companion models are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    argv = sys.argv[1:] if args is None else args
    try:
        if argv[:1] == ["data"]:
            return write_task_data(argv[1:])
        if argv[:1] == ["crossfit"]:
            from lit_pref.crossfit import main as crossfit

            return crossfit(argv[1:])
        return LitPrefCLI(
            PolicyModule,
            PreferenceDataModule,
            subclass_mode_model=True,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "description": "lit_pref: preference optimization on PyTorch Lightning. Subcommands fit, validate, "
                "test, predict (pick the algorithm with --model or a config); also `python -m lit_pref data "
                "--task reviews --format pairwise --out DIR` writes a built-in task's rows as JSONL, and "
                "`python -m lit_pref crossfit --config X.yaml --out DIR` writes outcome-model predictions and "
                "base-model samples for CausalPO (see --help of each)."
            },
            trainer_defaults=TRAINER_DEFAULTS,
            args=args,
        )
    except Exception as exc:
        cause = user_error(exc)
        if cause is None:
            raise
        print(
            f"lit_pref error: {cause}", file=sys.stderr
        )  # a user-fixable problem: say it plainly, no traceback
        raise SystemExit(2) from None


def user_error(exc: BaseException | None):
    """The LitPrefError behind `exc` (the config parser wraps errors raised while it builds classes), or None."""
    from lit_pref.errors import LitPrefError

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, LitPrefError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
