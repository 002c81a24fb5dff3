"""GGUF checkpoints (llama.cpp's format): converted once into a normal Hugging Face folder in the lit_pref cache.

transformers reads a GGUF file (with the `gguf` package) and dequantizes it to fp32, but refuses to
`save_pretrained` a GGUF-loaded model, and parsing the file's vocabulary alone takes ~25 s on a CPU core. So a GGUF
file (or a folder holding one) given as a policy or tokenizer is converted once, keyed by its content: the weights
are copied into a fresh model of the same class and saved (safetensors) with the file's tokenizer and chat
template. Later uses load that folder like any local model.
"""

from __future__ import annotations

import importlib.util
import struct
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


# GGUF metadata value types (the format's numbering) -> struct format of a scalar; 8 = string, 9 = array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY, _DEFAULT_ALIGNMENT = 8, 9, 32


class _Truncated(Exception):
    pass


class _Header:
    """Reads a GGUF header (little-endian) field by field; running past the file's end raises _Truncated."""

    def __init__(self, f):
        self.f = f

    def read(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) < size:
            raise _Truncated
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> bytes:
        n = self.read("Q")
        data = self.f.read(n)
        if len(data) < n:
            raise _Truncated
        return data

    def value(self, kind: int):
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.read("I"), self.read("Q")
            return [self.value(item) for _ in range(count)]
        if kind not in _SCALARS:
            raise ValueError(f"unknown metadata type {kind}")
        return self.read(_SCALARS[kind])


def _tensor_bytes(dims: list[int], ggml_type: int) -> int | None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (KeyError, ValueError):
        return None
    count = 1
    for d in dims:
        count *= d
    return count // block * size


def gguf_size_problem(path: Path) -> str | None:
    """'truncated: ...' when the GGUF file `path` ends before the header or the tensor data it declares, else None
    (also for files that are not GGUF: the converter names those)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = _Header(f)
        try:
            if f.read(4) != b"GGUF" or header.read("I") < 2:
                return None
            tensors, entries = header.read("Q"), header.read("Q")
            alignment = _DEFAULT_ALIGNMENT
            for _ in range(entries):
                key, kind = header.string(), header.read("I")
                value = header.value(kind)
                if key == b"general.alignment" and isinstance(value, int) and value > 0:
                    alignment = value
            ends = []
            for _ in range(tensors):
                header.string()
                dims = [header.read("Q") for _ in range(header.read("I"))]
                ggml_type, offset = header.read("I"), header.read("Q")
                ends.append((offset, _tensor_bytes(dims, ggml_type)))
        except _Truncated:
            return f"truncated: the file ends ({size:,} bytes) inside its header, before the tensors it lists"
        except ValueError:
            return None
        start = -(-f.tell() // alignment) * alignment
    if any(n is None for _, n in ends):
        return None  # a tensor type this gguf package does not know: let the converter judge
    needed = start + max((o + n for o, n in ends), default=0)
    if size < needed:
        return f"truncated: it has {size:,} bytes but its header declares tensor data up to byte {needed:,}"
    return None


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
    if problem := gguf_size_problem(gguf):
        raise ConfigError(
            f"{option} = {str(gguf)!r}: the GGUF file is {problem} (an interrupted download or copy). Download or "
            "copy it again"
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
