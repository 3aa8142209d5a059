"""Atomic file writes: write a temporary file in the same directory, fsync, then rename.

A crash or Ctrl-C mid-write leaves the previous file (or nothing), never a truncated one. The
file gets the permissions ``open()`` would give a new file (``0o666`` minus the umask, e.g.
``0o644``), not the ``0o600`` of a temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _umask() -> int:
    # Linux reports the umask without changing it; elsewhere set and restore it (not atomic
    # across threads, but the value read back is restored immediately).
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Context manager yielding a binary file that replaces ``path`` only on success.

    Example:
        >>> with atomic_writer("/tmp/x.bin") as f:  # doctest: +SKIP
        ...     f.write(b"data")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path) as f:
        f.write(data)
