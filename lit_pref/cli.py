"""`python -m lit_pref <subcommand>`: dispatch to lit_pref's own subcommands (lit_pref.commands) or LightningCLI."""

from __future__ import annotations

import os
import sys

#: lit_pref's own subcommands: name -> module under lit_pref.commands with a main(argv)
COMMANDS = {"data": "data", "crossfit": "crossfit"}


def main(args: list[str] | None = None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import importlib
    import warnings

    from lit_pref.errors import LitPrefError

    # Frozen companion models are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    argv = sys.argv[1:] if args is None else args
    try:
        if argv[:1] and argv[0] in COMMANDS:
            return importlib.import_module(f"lit_pref.commands.{COMMANDS[argv[0]]}").main(argv[1:])
        from lit_pref.commands.lightning import main as lightning_main

        return lightning_main(args)
    except LitPrefError as exc:  # a user-fixable problem: say it plainly, no traceback
        print(f"lit_pref error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
