"""Compile the XNOR kernel library on first use and load it through ``ctypes``.

The C source (``_kernels/xnor.c``) is built with the system C compiler the first time a binary
kernel runs, never at install time (a build step at ``pip install`` would need a second torch in
the build environment). The library lands in a per-user cache directory named by a hash of the
source, the flags and the compiler version, so an edited source or another compiler gets its own
build and concurrent first uses wait on one lock. Without a working compiler :func:`kernel_library`
returns ``None`` and the layers use the pure-PyTorch path, which gives the same numbers.

Environment:
    ``NNSHRINK_CACHE_DIR``: cache root (default ``$XDG_CACHE_HOME/nnshrink`` or ``~/.cache/nnshrink``).
    ``CC``: the compiler (default ``cc``, then ``gcc``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).parent / "_kernels" / "xnor.c"
# Portable code: no -march, so the library loads on any x86-64 (or other) CPU; the AVX-512 path
# carries its own target attribute and is only called after a run-time CPU check. No fused
# multiply-add: the output scaling must round like PyTorch's separate multiply and add.
BASE_FLAGS = ("-O3", "-shared", "-fPIC", "-ffp-contract=off", "-fvisibility=hidden")
OPENMP_FLAGS = ("-fopenmp",)
ABI_VERSION = 1

__all__ = ["KernelLibrary", "build_status", "cache_dir", "kernel_library"]


def cache_dir() -> Path:
    """Where compiled kernels live: ``<cache root>/kernels``.

    Example:
        >>> cache_dir().name
        'kernels'
    """
    root = os.environ.get("NNSHRINK_CACHE_DIR")
    if root:
        return Path(root) / "kernels"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "nnshrink" / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else cc
    except (OSError, subprocess.SubprocessError):
        return cc


class KernelLibrary:
    """The loaded kernel library: ``ctypes`` functions plus what the CPU and build offer.

    Attributes:
        path: the shared object.
        avx512: the CPU runs the AVX-512 VPOPCNTDQ path.
        openmp: the library was built with OpenMP (else it runs single-threaded).
        pack, conv, conv_float: the C entry points (see ``_kernels/xnor.c`` for their
            arguments).
    """

    def __init__(self, path: Path, openmp: bool) -> None:
        lib = ctypes.CDLL(str(path))
        if lib.nns_xnor_abi_version() != ABI_VERSION:
            raise OSError(f"{path}: kernel ABI {lib.nns_xnor_abi_version()} != {ABI_VERSION}")
        i64, ptr, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        lib.nns_xnor_pack.argtypes = [ptr] + [i64] * 8 + [ptr, ptr, i64, i64, ptr, i32, i32]
        lib.nns_xnor_pack.restype = None
        lib.nns_xnor_conv.argtypes = [ptr, ptr, ptr] + [i64] * 15 + [ptr] * 4 + [i32, i32]
        lib.nns_xnor_conv.restype = i32
        lib.nns_xnor_conv_float.argtypes = (
            [ptr] + [i64] * 8 + [ptr] * 4 + [i64] * 11 + [ptr] * 4 + [i32, i32]
        )
        lib.nns_xnor_conv_float.restype = i32
        self.path = path
        self.openmp = openmp and bool(lib.nns_xnor_has_openmp())
        self.avx512 = bool(lib.nns_xnor_has_avx512())
        self.pack = lib.nns_xnor_pack
        self.conv = lib.nns_xnor_conv
        self.conv_float = lib.nns_xnor_conv_float
        self._lib = lib


_STATUS: dict[str, str] = {}


def build_status() -> dict[str, str]:
    """What the last :func:`kernel_library` call did: ``{"state": ..., "detail": ...}``.

    ``state`` is ``"loaded"`` (with the library path), ``"no-compiler"`` or ``"failed"`` (with
    the compiler's message).
    """
    return dict(_STATUS)


def _compile(cc: str, flags: tuple[str, ...], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [cc, *flags, "-o", tmp, str(SOURCE)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise OSError(f"{' '.join(cmd)} failed:\n{out.stderr.strip()[-2000:]}")
        os.replace(tmp, target)  # atomic: a concurrent loader sees the old file or the new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build(cc: str, openmp: bool) -> Path:
    flags = BASE_FLAGS + (OPENMP_FLAGS if openmp else ())
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    key.update(" ".join(flags).encode())
    key.update(_compiler_version(cc).encode())
    folder = cache_dir() / key.hexdigest()[:16]
    target = folder / "libnnshrink_xnor.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):  # one build; the others wait, then find the file
        if not target.exists():
            _compile(cc, flags, target)
    return target


@contextlib.contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps the file whole
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@functools.lru_cache(maxsize=1)
def kernel_library() -> KernelLibrary | None:
    """Build (once per source/compiler) and load the XNOR kernels; ``None`` if that fails.

    Tries an OpenMP build first, then a single-threaded one. A failure warns once and is
    remembered for the process (see :func:`build_status`).

    Example:
        >>> lib = kernel_library()
        >>> lib is None or isinstance(lib.avx512, bool)
        True
    """
    cc = _compiler()
    if cc is None:
        _STATUS.update(state="no-compiler", detail="no C compiler (cc, gcc or $CC) on PATH")
        warnings.warn(
            "nnshrink: no C compiler found, XNOR layers use the PyTorch fallback (same numbers, "
            "float convolutions); install gcc for the bit-packed kernel",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    errors = []
    for openmp in (True, False):
        try:
            path = _build(cc, openmp)
            lib = KernelLibrary(path, openmp)
        except (OSError, subprocess.SubprocessError, AttributeError) as exc:
            errors.append(str(exc))
            continue
        _STATUS.update(state="loaded", detail=str(path))
        return lib
    _STATUS.update(state="failed", detail="\n".join(errors))
    warnings.warn(
        "nnshrink: the XNOR kernel did not build, XNOR layers use the PyTorch fallback (same "
        f"numbers): {errors[-1][:500]}",
        RuntimeWarning,
        stacklevel=2,
    )
    return None
