"""Issue 29 (1, 2): checkpoints are written atomically, a failed write loses nothing, a damaged one is named."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import lit_pref
import lit_pref.checkpoints as checkpoints
from lit_pref.checkpoints import AtomicCheckpointIO, checkpoint_problem, verify_checkpoint
from lit_pref.commands.lightning import cli_instances
from lit_pref.errors import CheckpointError
from tests.conftest import REPO
from tests.helpers import data_module, trainer


def full_disk_at(name_part: str, monkeypatch) -> list[str]:
    """Make torch.save fail like a full disk (half the bytes written, then ENOSPC) for a file whose name holds
    `name_part`; returns the paths it was asked to write."""
    real, asked = torch.save, []

    def save(obj, path, *args, **kwargs):
        asked.append(str(path))
        if name_part in asked[-1] or name_part in Path(path).name:
            Path(path).write_bytes(b"PK\x03\x04" + b"\0" * 1000)  # a partial write
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", save)
    return asked


def fit_with_checkpoints(folder: Path, steps: int, **kwargs):
    callbacks = [ModelCheckpoint(dirpath=folder, every_n_train_steps=2, save_top_k=-1, save_last=True)]
    module = lit_pref.DPO(lr=1e-3)
    trainer(steps, callbacks, enable_checkpointing=True, limit_val_batches=0, plugins=[AtomicCheckpointIO()],
            **kwargs).fit(module, data_module(max_rows=80))  # fmt: skip
    return module


def test_a_full_disk_keeps_every_earlier_checkpoint_and_names_the_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    stale = folder / ".last.ckpt.tmp-999999999-abc"  # left by a writer killed mid-write (its pid is gone)
    folder.mkdir()
    stale.write_bytes(b"half")
    asked = full_disk_at("step=6", monkeypatch)
    with pytest.raises(CheckpointError) as err:
        fit_with_checkpoints(folder, 8)
    message = str(err.value)
    assert (
        f"cannot write the checkpoint epoch=1-step=6.ckpt into {folder}: No space left on device" in message
    )
    assert re.search(r"It needs about [\d.,]+ MB; that disk has [\d.,]+ MB free", message)
    assert "The checkpoints already in the folder are intact" in message
    assert not stale.exists()  # removed by the next write
    # the temp file was in the same folder (a rename, not a copy across file systems) and is gone
    assert Path(asked[-1]).parent == folder and Path(asked[-1]).name.startswith(".epoch=1-step=6.ckpt.tmp-")
    assert sorted(p.name for p in folder.iterdir()) == [
        "epoch=0-step=2.ckpt",
        "epoch=0-step=4.ckpt",
        "last.ckpt",
    ]
    for path in folder.iterdir():
        assert checkpoint_problem(path) is None, path
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 4  # `last` is the step-4 one


def test_a_good_checkpoint_is_renamed_into_place_and_verifies(tmp_path):
    module = fit_with_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]  # no temp left
    saved = AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")
    assert saved["global_step"] == 2
    assert torch.equal(saved["state_dict"]["policy.lm_head.weight"], module.policy.lm_head.weight)


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def flipped_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    at = data.index(b"TENSORDATA") + 5  # inside the tensor's bytes, not the zip headers
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def emptied(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE = {truncated: "truncated", garbage: "not a readable checkpoint", flipped_byte: "fails its checksum",
          emptied: "the file is empty"}  # fmt: skip


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_a_damaged_checkpoint_is_named_with_what_is_wrong(tmp_path, damage):
    path = tmp_path / "epoch=0-step=4.ckpt"
    marker = torch.frombuffer(bytearray(b"TENSORDATA" * 100), dtype=torch.uint8)
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": marker.clone()}, "global_step": 4}, path)
    assert checkpoint_problem(path) is None
    damage(path)
    assert DAMAGE[damage] in checkpoint_problem(path)
    with pytest.raises(CheckpointError, match=re.escape(f"--ckpt_path = '{path}': the checkpoint is ")):
        verify_checkpoint(path)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        AtomicCheckpointIO().load_checkpoint(path)


def test_a_sharded_checkpoint_folder_without_its_index_is_incomplete(tmp_path):
    folder = tmp_path / "last.ckpt"
    folder.mkdir()
    torch.save({"global_step": 2}, folder / "meta.pt")
    assert (
        checkpoint_problem(folder)
        == "an incomplete sharded checkpoint folder (no .metadata: its write was cut short)"
    )
    (folder / ".metadata").write_bytes(b"index")
    assert checkpoint_problem(folder) is None


def test_fit_from_the_cli_writes_atomic_checkpoints(tmp_path):
    _, _, plain = cli_instances(["--config", str(REPO / "configs/dpo.yaml"),
                                 "--trainer.logger.init_args.save_dir", str(tmp_path)])  # fmt: skip
    assert type(plain.strategy.checkpoint_io) is AtomicCheckpointIO
    assert any(isinstance(c, lit_pref.DivergenceGuard) for c in plain.callbacks)
