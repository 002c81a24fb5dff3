"""`python -m lit_pref <subcommand>`: dispatch to lit_pref's own subcommands (lit_pref.commands) or LightningCLI."""

from __future__ import annotations

import os
import sys

#: lit_pref's own subcommands: name -> module under lit_pref.commands with a main(argv)
COMMANDS = {"data": "data", "crossfit": "crossfit", "sample": "sample"}
#: every subcommand, with one line of help (the Lightning ones run through LitPrefCLI)
SUBCOMMANDS = {
    "fit": "train a method: python -m lit_pref fit --config configs/dpo.yaml",
    "validate": "validation metrics of a config (and --ckpt_path) without training",
    "test": "test metrics of a config (and --ckpt_path)",
    "predict": "generate (policies) or score (reward/outcome models) data.predict rows",
    "sample": "best-of-N / PRS data generation with a sampler and a reward",
    "data": "write a built-in task's rows as JSONL files",
    "crossfit": "cross-fitted outcome-model predictions and base-model samples for CausalPO",
}


def usage() -> str:
    """The top-level help: every subcommand, without importing torch or Lightning (it answers at once)."""
    rows = "\n".join(f"  {name:<10}{text}" for name, text in SUBCOMMANDS.items())
    return (
        f"usage: python -m lit_pref [-h] {{{','.join(SUBCOMMANDS)}}} ...\n\n"
        "lit_pref: preference optimization of language models on PyTorch Lightning.\n\n"
        f"subcommands:\n{rows}\n\n"
        "`python -m lit_pref <subcommand> --help` lists a subcommand's options; docs/configs.md shows the configs."
    )


def main(args: list[str] | None = None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import importlib
    import warnings

    # Frozen companion models are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    argv = sys.argv[1:] if args is None else args
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        if not argv:
            raise SystemExit(2)  # a subcommand is required
        return None
    try:
        if argv[:1] and argv[0] in COMMANDS:
            return importlib.import_module(f"lit_pref.commands.{COMMANDS[argv[0]]}").main(argv[1:])
        from lit_pref.commands.lightning import main as lightning_main

        return lightning_main(args)
    except Exception as exc:
        cause = user_error(exc)
        if cause is None:
            raise
        print(
            f"lit_pref error: {cause}", file=sys.stderr
        )  # a user-fixable problem: say it plainly, no traceback
        raise SystemExit(2) from None
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Destroy torch.distributed's process group while the interpreter is whole. Lightning does this at exit for
    NCCL only; a gloo group left to interpreter teardown now and then aborts a finished run ("terminate called
    without an active exception", exit code -6)."""
    distributed = sys.modules.get("torch.distributed")  # not imported: no group to leave
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


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
