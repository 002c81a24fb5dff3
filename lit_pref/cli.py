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

    from lit_pref.errors import LitPrefError

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
    except LitPrefError as exc:  # a user-fixable problem: say it plainly, no traceback
        print(f"lit_pref error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
