"""One atomic-write helper for files and folders: all-or-nothing, umask permissions, stale temps cleaned."""

import os
from pathlib import Path

import pytest

from lit_pref.atomic import atomic_write


def test_file_and_folder_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        f = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
        d = atomic_write(tmp_path / "out", lambda tmp: (tmp / "w.bin").write_text("y"), directory=True)
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o644 and d.stat().st_mode & 0o777 == 0o755
    assert f.read_text() == "x" and (d / "w.bin").read_text() == "y"


def test_failure_keeps_the_old_version_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out"
    atomic_write(target, lambda tmp: (tmp / "v").write_text("1"), directory=True)

    def broken(tmp: Path):
        (tmp / "v").write_text("2")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken, directory=True)
    assert (target / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stale_temps_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / ".out.tmp-999999999-abc"  # no such process
    dead.mkdir()
    mine = tmp_path / f".out.tmp-{os.getppid()}-abc"  # a live process (our parent): may still be writing
    mine.mkdir()
    atomic_write(tmp_path / "out", lambda tmp: None, directory=True)
    assert not dead.exists() and mine.exists()


def test_replace_false_keeps_a_concurrent_writers_copy(tmp_path):
    target = tmp_path / "model"
    atomic_write(target, lambda tmp: (tmp / "w").write_text("first"), directory=True)
    atomic_write(target, lambda tmp: (tmp / "w").write_text("second"), directory=True, replace=False)
    assert (target / "w").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
