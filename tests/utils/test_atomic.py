"""Atomic writes: all or nothing, and the permissions a plain open() would give."""

from __future__ import annotations

import os
import stat

import pytest

from nnshrink.utils.atomic import atomic_write_bytes, atomic_writer


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"data")
        with open(tmp_path / "oracle.bin", "wb") as f:  # the oracle: what open() does
            f.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "oracle.bin").stat().st_mode) == mode
    assert (tmp_path / "a.bin").read_bytes() == b"data"


def test_failure_leaves_the_old_file(tmp_path):
    path = tmp_path / "a.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with atomic_writer(path) as f:
            f.write(b"new")
            raise RuntimeError("crash")
    assert path.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["a.bin"]
