"""Building and loading the XNOR kernel library (nnshrink.binary._build)."""

import shutil
import warnings

import pytest

from nnshrink.binary import _build

HAVE_CC = _build._compiler() is not None


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_builds_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNSHRINK_CACHE_DIR", str(tmp_path))
    assert _build.cache_dir() == tmp_path / "kernels"
    path = _build._build(_build._compiler(), openmp=False)  # the quicker single-threaded build
    assert path.parent.parent == tmp_path / "kernels" and path.exists()
    stamp = path.stat().st_mtime_ns
    assert _build._build(_build._compiler(), openmp=False) == path  # cached: not rebuilt
    assert path.stat().st_mtime_ns == stamp
    lib = _build.KernelLibrary(path, openmp=False)
    assert lib.openmp is False and isinstance(lib.avx512, bool)


def test_missing_compiler_and_failed_build_fall_back(tmp_path, monkeypatch):
    monkeypatch.setenv("NNSHRINK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_build, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert _build.kernel_library.__wrapped__() is None
    assert _build.build_status()["state"] == "no-compiler"
    if not HAVE_CC:
        return
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(_build, "SOURCE", broken)
    monkeypatch.setattr(_build, "_compiler", lambda: shutil.which("cc") or "gcc")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _build.kernel_library.__wrapped__() is None
    assert any("PyTorch fallback" in str(w.message) for w in caught)
    status = _build.build_status()
    assert status["state"] == "failed" and "broken.c" in status["detail"]
    assert not list((tmp_path / "kernels").rglob("*.so"))  # no half-written library left
