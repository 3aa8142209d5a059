"""The API reference: a page per public config, matching what docs/gen_api.py writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_config_has_its_page_and_pages_are_current():
    gen = _generator()
    configs = gen.public_configs()
    assert {"structured-pruning", "ptq", "weight-sharing", "low-rank"} <= set(configs)
    for name, text in gen.pages().items():
        page = ROOT / "docs" / "api" / name
        assert page.is_file(), f"missing {page}: run python docs/gen_api.py"
        assert page.read_text() == text, f"{page} is stale: run python docs/gen_api.py"
    for kind in configs:
        assert f"::: {configs[kind]}" in (ROOT / "docs" / "api" / f"{kind}.md").read_text()


def test_every_public_config_documents_its_fields():
    """Each config's docstring has an Args entry for each of its own fields (mkdocstrings shows it)."""
    import dataclasses

    from nnshrink.cli.flags import field_help
    from nnshrink.core.config import config_types
    from nnshrink.core.layers import LayerSelection

    shared = {f.name for f in dataclasses.fields(LayerSelection)}
    missing = {}
    for kind in _generator().public_configs():
        config = config_types()[kind]
        documented = set(field_help(config))
        own = {f.name for f in dataclasses.fields(config)} - shared
        if own - documented:
            missing[kind] = sorted(own - documented)
    assert not missing, f"fields without an Args entry: {missing}"
