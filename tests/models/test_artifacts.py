"""Built-in models: shipped files verified by checksum, builds cached per machine by key, one build at a time."""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path

import pytest

from lit_pref.errors import ConfigError
from lit_pref.models import artifacts


@pytest.fixture
def model_cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("LIT_PREF_MODEL_CACHE", str(root))
    return root


def write_build(out: Path, text: str = "weights") -> None:
    out.mkdir()
    (out / "model.bin").write_text(text)


def test_a_build_is_cached_by_its_key_and_reused(model_cache):
    calls = []

    def build(out):
        calls.append(out)
        write_build(out)

    first = artifacts.cached_build("demo", "demo", {"steps": 3}, build)
    again = artifacts.cached_build("demo", "demo", {"steps": 3}, build)
    other = artifacts.cached_build("demo", "demo", {"steps": 4}, build)
    assert first == again != other and len(calls) == 2
    manifest = json.loads((first / artifacts.MANIFEST).read_text())
    assert manifest["parts"] == {"steps": 3}
    assert manifest["files"] == {"model.bin": artifacts.file_sha256(first / "model.bin")}
    assert not [p for p in model_cache.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_the_key_covers_versions_and_threads(monkeypatch):
    base = artifacts.build_key({"threads": 2})
    assert artifacts.build_key({"threads": 1}) != base
    monkeypatch.setattr(artifacts, "_version", lambda package: "0.0.0")
    assert artifacts.build_key({"threads": 2}) != base
    monkeypatch.setattr(artifacts, "BUILTIN_VERSION", "other")
    assert artifacts.build_key({"threads": 2}) != artifacts.build_key({"threads": 1})


def test_a_damaged_cached_build_is_reported_and_rebuilt(model_cache, capsys):
    folder = artifacts.cached_build("demo", "demo", {}, write_build)
    (folder / "model.bin").write_text("tampered")
    artifacts._verified.clear()  # a new process: nothing verified yet
    calls = []
    again = artifacts.cached_build("demo", "demo", {}, lambda out: (calls.append(1), write_build(out)))
    assert again == folder and calls == [1]
    assert "is damaged" in capsys.readouterr().out and (folder / "model.bin").read_text() == "weights"


def _slow_build(root: str, log: str) -> None:
    import os

    os.environ["LIT_PREF_MODEL_CACHE"] = root

    def build(out):
        with open(log, "a") as f:
            f.write("build\n")
        time.sleep(1.0)
        write_build(out)

    artifacts.cached_build("demo", "demo", {}, build)


@pytest.mark.slow
def test_concurrent_processes_wait_for_one_build(model_cache, tmp_path):
    log = tmp_path / "builds.log"
    context = mp.get_context("spawn")
    procs = [context.Process(target=_slow_build, args=(str(model_cache), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text() == "build\n"  # one process built; the others waited and reused it


def test_a_waiting_process_gives_up_with_a_message(model_cache):
    import fcntl

    folder = model_cache / "demo-x"
    model_cache.mkdir()
    with open(model_cache / "demo-x.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with (
            pytest.raises(TimeoutError, match="another process building builtin:demo"),
            artifacts.build_lock(folder, "builtin:demo", timeout_s=0.6),
        ):
            pass


def test_builds_use_at_most_the_callers_threads():
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert artifacts.build_threads_for_caller() == 1
        torch.set_num_threads(4)
        assert artifacts.build_threads_for_caller() == artifacts.BUILD_THREADS
    finally:
        torch.set_num_threads(before)


def test_every_shipped_model_matches_its_checksums_and_current_recipe():
    manifest = artifacts.shipped_manifest()
    assert {"tiny", "tiny-sft-reviews", "tiny-sft-listops", "tiny-sft-constraints"} <= set(manifest)
    for name, entry in manifest.items():
        artifacts._verified.clear()
        assert artifacts.shipped_folder(name) == artifacts.SHIPPED_ROOT / name
        recipe = artifacts.find_recipe(name, name)
        # a recipe changed without shipping its model again would leave these files stale
        assert json.loads(json.dumps(recipe.settings(name))) == entry["settings"], name
        assert artifacts.resolve_model_path(f"builtin:{name}") == str(artifacts.SHIPPED_ROOT / name)


def test_a_damaged_shipped_model_is_an_error_naming_the_file(tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "shipped"
    shutil.copytree(artifacts.SHIPPED_ROOT / "tiny", root / "tiny")
    shutil.copy(artifacts.SHIPPED_ROOT / "manifest.json", root / "manifest.json")
    monkeypatch.setattr(artifacts, "SHIPPED_ROOT", root)
    with open(root / "tiny" / "model.safetensors", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01")
    artifacts._verified.clear()
    with pytest.raises(
        ConfigError, match=r"builtin:tiny ships with lit_pref, but .*model.safetensors does not match"
    ):
        artifacts.resolve_model_path("builtin:tiny")
