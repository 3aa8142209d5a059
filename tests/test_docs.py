"""Every Python block in README.md and docs/*.md runs as written, in order, one namespace per page.

A block whose first line is ``# doctest: +SKIP`` is left out (at most one block in ten; each has a
runnable equivalent in examples/). Pages run in a temporary working directory so the files they
write do not land in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SKIP = "# doctest: +SKIP"


def blocks(page: Path) -> list[str]:
    """The ```python blocks of a page, in order."""
    return _BLOCK.findall(page.read_text())


def test_at_most_one_block_in_ten_is_skipped():
    every = [b for page in PAGES for b in blocks(page)]
    skipped = [b for b in every if b.lstrip().startswith(SKIP)]
    assert every and len(skipped) * 10 <= len(every), f"{len(skipped)} of {len(every)} skipped"


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run_as_written(page, tmp_path, monkeypatch):
    import sys
    import types

    monkeypatch.chdir(tmp_path)
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses and type hints
    namespace = module.__dict__
    for index, code in enumerate(blocks(page)):
        if code.lstrip().startswith(SKIP):
            continue
        try:
            exec(compile(code, f"{page.name}[block {index}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(
                f"{page.name}, block {index} failed: {type(exc).__name__}: {exc}\n{code}"
            ) from exc
