"""Content fingerprints of files: what identifies a data file or a model folder (path and mtime do not)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def content_digest(path: str | Path) -> str:
    """A fast hash (BLAKE2b) of a file's bytes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_digest(folder: str | Path, patterns: tuple[str, ...]) -> str:
    """One hash of the names and contents of the files in `folder` matching `patterns` (sorted by name)."""
    folder = Path(folder)
    files = sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    h = hashlib.blake2b(digest_size=16)
    for path in files:
        h.update(f"{path.name}:{content_digest(path)};".encode())
    return h.hexdigest()
