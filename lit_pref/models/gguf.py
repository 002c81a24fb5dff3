"""GGUF checkpoints (llama.cpp's format): converted once into a normal Hugging Face folder in the lit_pref cache.

transformers reads a GGUF file (with the `gguf` package) and dequantizes it to fp32, but refuses to
`save_pretrained` a GGUF-loaded model, and parsing the file's vocabulary alone takes ~25 s on a CPU core. So a GGUF
file (or a folder holding one) given as a policy or tokenizer is converted once, keyed by its content: the weights
are copied into a fresh model of the same class and saved (safetensors) with the file's tokenizer and chat
template. Later uses load that folder like any local model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lit_pref.digest import content_digest
from lit_pref.errors import ConfigError
from lit_pref.models.artifacts import cached_build

SUFFIX = ".gguf"


def gguf_file(path: Path, option: str, needs: tuple[str, ...]) -> Path | None:
    """The GGUF file `path` names: the file itself, or the one *.gguf file of a folder that has none of the
    Hugging Face files `needs`; None when `path` is neither."""
    if path.is_file() and path.suffix.lower() == SUFFIX:
        return path
    if not path.is_dir() or any((path / name).is_file() for name in needs):
        return None
    files = sorted(path.glob(f"*{SUFFIX}"))
    if len(files) > 1:
        raise ConfigError(
            f"{option} = {str(path)!r}: the folder holds several GGUF files {[f.name for f in files]}; "
            f"give the path of the one to use, e.g. {option}={files[0]}"
        )
    return files[0] if files else None


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Write the model and tokenizer of `gguf` into `folder` as fp32 safetensors + tokenizer files."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(folder)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are plain fp32 now; save_pretrained refuses GGUF
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(folder)


def converted_folder(gguf: Path, option: str) -> str:
    """The cached Hugging Face folder of a GGUF file, converting it on first use (rank 0 only)."""
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(
            f"{option} = {str(gguf)!r}: reading a GGUF file needs the gguf package: pip install gguf"
        )
    digest = content_digest(gguf)

    def convert(out: Path) -> None:
        print(f"lit_pref: converting {gguf} to a Hugging Face folder (first use only)", flush=True)
        try:
            convert_gguf(gguf, out)
        except Exception as exc:  # not GGUF, an architecture transformers cannot dequantize, ...
            raise ConfigError(
                f"{option} = {str(gguf)!r}: cannot convert this GGUF file ({type(exc).__name__}: {exc}). Convert it "
                "to a Hugging Face folder yourself (transformers: from_pretrained(folder, gguf_file=...), then "
                f"save_pretrained) and point {option} at that folder"
            ) from exc

    return str(cached_build(str(gguf), f"gguf-{gguf.stem}", {"gguf": digest}, convert))
