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


def _fsync(path: Path) -> None:
    """Flush a file's (or folder's: a rename in it) data to the disk, so a power cut cannot undo it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path,
    write: Callable[[Path], object],
    directory: bool = False,
    replace: bool = True,
    fsync: bool = False,
) -> Path:
    """Run write(tmp) on a temporary file (or, with `directory`, folder) beside `path`, then rename it onto `path`.

    The result gets the permissions the umask gives a new file or folder (temp files are created private).
    `replace=False` keeps an existing `path` (e.g. a built-in model another process built at the same time).
    `fsync` flushes the file and then its folder to the disk (checkpoints: durable once renamed).
    Temp files of earlier writers that were killed are removed first. A failed write (e.g. the disk is full)
    removes its temp file and leaves `path` as it was."""
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
        if fsync and not directory:
            _fsync(tmp)
        _move_into_place(tmp, path, replace)
        if fsync:
            _fsync(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
    return path


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def unwritable_reason(folder: str | Path) -> str | None:
    """Why files cannot be created in `folder` (or in the folder that would hold it, when it does not exist yet),
    else None. Tried for real with a probe file: permissions, read-only mounts and ACLs all show."""
    folder = Path(folder).expanduser().absolute()
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=f".lit_pref-write-test-{os.getpid()}-")
    except OSError as exc:
        missing = "" if existing == folder else f"{folder} does not exist and "
        return f"{missing}cannot create files in {existing}: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(probe)
    return None
