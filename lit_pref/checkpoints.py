"""Checkpoint files that survive faults: written atomically and verified before they are loaded.

A checkpoint is written to a temporary file in its own folder, flushed to the disk (fsync) and renamed onto its
name, so a full disk or a kill mid-write leaves the previous file (and `last.ckpt`) as it was. Verification uses the
checksum every checkpoint already carries: `torch.save` writes a zip archive that records a CRC-32 of each entry,
and reading every entry back checks them all; a truncated file lacks the archive's end record. That catches cut-
short writes, garbage and flipped bits (accidental damage; a CRC is no defence against deliberate tampering).

`python -m lit_pref fit` installs AtomicCheckpointIO by default; from Python pass it to the Trainer yourself:
`Trainer(plugins=[lit_pref.AtomicCheckpointIO()])`.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from lit_pref.atomic import atomic_write
from lit_pref.errors import CheckpointError

#: a sharded (distributed) checkpoint folder: Lightning's file of non-tensor state, and torch.distributed's index
SHARDED_FILES = ("meta.pt", ".metadata")
_ZIP_MAGIC = b"PK\x03\x04"
# (resolved path, size, mtime) of files verified in this process: the CLI and the loader check each file once
_verified: set[tuple[str, int, int]] = set()


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def checkpoint_nbytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint: about the size of its file (each storage counted once)."""
    seen: dict[int, int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            seen[storage.data_ptr() or id(storage)] = storage.nbytes()
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(obj)
    return sum(seen.values())


def _save_with_checksums(checkpoint: dict[str, Any], path: Path) -> None:
    from torch.utils.serialization import config

    recorded = config.save.compute_crc32
    config.save.compute_crc32 = True  # the CRC-32 of every entry is what verification checks
    try:
        torch.save(checkpoint, path)
    finally:
        config.save.compute_crc32 = recorded


def write_error(path: Path, checkpoint: dict[str, Any], exc: OSError) -> CheckpointError:
    """The error of a failed checkpoint write: the folder, the space needed and free, and that nothing was lost."""
    folder = path.parent
    try:
        free = f"{megabytes(shutil.disk_usage(folder).free)} free"
    except OSError:
        free = "an unknown amount free"
    return CheckpointError(
        f"cannot write the checkpoint {path.name} into {folder}: {exc.strerror or exc}. It needs about "
        f"{megabytes(checkpoint_nbytes(checkpoint))}; that disk has {free}. The checkpoints already in the folder "
        "are intact (the new one went to a temporary file, now removed). Free space there (or point the "
        "ModelCheckpoint callback's dirpath at another disk), then continue with --resume true"
    )


def _zip_problem(path: Path) -> str | None:
    """What is wrong with a torch.save zip archive (None: every entry's CRC-32 matches its bytes)."""
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
        if not any(e.filename.rsplit("/", 1)[-1] == "data.pkl" for e in entries):
            return "not a PyTorch checkpoint (a zip archive without data.pkl)"
        for entry in entries:
            if entry.CRC == 0:  # written with torch's compute_crc32 off: no checksum to check
                continue
            try:
                with archive.open(entry) as member:
                    while member.read(1 << 24):
                        pass
            except (zipfile.BadZipFile, EOFError) as exc:
                return f"damaged: its entry {entry.filename} fails its checksum ({exc})"
    return None


def _file_problem(path: Path, size: int) -> str | None:
    if size == 0:
        return "the file is empty (its write never finished)"
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        return _zip_problem(path)
    except zipfile.BadZipFile:
        if head == _ZIP_MAGIC:
            return f"truncated ({size} bytes, and the archive torch.save writes lacks its end: the write was cut short)"
    try:  # not a zip archive: the legacy torch.save format (unverifiable), or garbage
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch says, the file is not a checkpoint
        return f"not a readable checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint `path` cannot be resumed from (truncated, damaged, incomplete), or None when it is sound.
    A sharded checkpoint folder must hold both of SHARDED_FILES and a sound meta.pt."""
    path = Path(path)
    if path.is_dir():
        missing = [name for name in SHARDED_FILES if not (path / name).is_file()]
        if missing:
            return (
                f"an incomplete sharded checkpoint folder (no {', '.join(missing)}: its write was cut short)"
            )
        problem = checkpoint_problem(path / SHARDED_FILES[0])
        return None if problem is None else f"its {SHARDED_FILES[0]} is {problem}"
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _verified:
            return None
        problem = _file_problem(path, stat.st_size)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if problem is None:
        _verified.add(key)
    return problem


def verify_checkpoint(path: str | Path, option: str = "--ckpt_path") -> None:
    """Raise a CheckpointError naming `path` (given by `option`) unless it is a sound checkpoint."""
    if not Path(path).exists():
        raise CheckpointError(f"{option} = {str(path)!r}: no such file")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(
            f"{option} = {str(path)!r}: the checkpoint is {problem}. Give another checkpoint, or use --resume true "
            "to continue from the newest sound checkpoint of the run"
        )


def _is_local(path: Any) -> bool:
    return "://" not in str(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save checkpoints that are never half-written and are verified before loading.

    Writes go to a temporary file beside the target, are fsynced and renamed into place; a failed write (disk full,
    read-only folder) removes the temporary file, keeps every earlier checkpoint and raises a CheckpointError naming
    the folder and the space needed. Loading checks every entry's CRC-32 first and names a damaged file.
    Remote paths (s3://, ...) keep Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        try:
            atomic_write(path, lambda tmp: _save_with_checksums(checkpoint, tmp), fsync=True)
        except OSError as exc:
            raise write_error(path, checkpoint, exc) from exc

    def load_checkpoint(self, path, map_location: Any = lambda storage, loc: storage, weights_only=None):
        if _is_local(path) and Path(path).exists():
            verify_checkpoint(path, "the checkpoint")
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


def use_atomic_checkpoints(trainer) -> None:
    """Give `trainer` AtomicCheckpointIO unless it was given a CheckpointIO of its own (Lightning's default
    TorchCheckpointIO is replaced). ModelParallelStrategy uses it for whole-state checkpoints
    (`save_distributed_checkpoint: false`); its sharded folders are written by torch.distributed.checkpoint."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
