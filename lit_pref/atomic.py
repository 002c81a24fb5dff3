"""Atomic writes of files and folders: readers never see a half-written one, and a failure leaves the previous
one in place. The one helper for caches, exports, built-in models and output files."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Temp siblings left by a writer that was killed (its pid is in the name and no longer runs)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        pid = tmp.name[len(f".{path.name}.tmp-") :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def _move_into_place(tmp: Path, path: Path, replace: bool) -> None:
    if not tmp.is_dir():
        os.replace(tmp, path)
        return
    if path.exists():
        if not replace:  # a concurrent writer finished first: keep its copy
            return
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        tmp.rename(path)
    except OSError:
        if replace or not path.exists():
            raise


def atomic_write(
    path: str | Path, write: Callable[[Path], object], directory: bool = False, replace: bool = True
) -> Path:
    """Run write(tmp) on a temporary file (or, with `directory`, folder) beside `path`, then rename it onto `path`.

    The result gets the permissions the umask gives a new file or folder (temp files are created private).
    `replace=False` keeps an existing `path` (e.g. a built-in model another process built at the same time).
    Temp files of earlier writers that were killed are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    prefix = f".{path.name}.tmp-{os.getpid()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix)
        os.close(fd)
        tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())
        _move_into_place(tmp, path, replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    return path
