"""Training-step and generation benchmark: lit_pref against TRL's DPOTrainer and a bare PyTorch loop.

    python tools/bench.py --out docs/benchmarks.md            # full run (a few minutes on 2 cores)
    python tools/bench.py --quick                             # smoke run (< 1 min), prints the tables
    python tools/bench.py --token-batches                     # data.batch_tokens: rows, tokens, padding (no model)

The code lives in the package tools/bench/ (contenders, coordinator, report, sections, cli); `--help` lists
every option.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: lit_pref and tools.bench

from tools.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
