"""Write the API reference pages (docs/api/*.md): one page per public config, one per area.

Run ``python docs/gen_api.py`` after adding a config; ``tests/test_api_docs.py`` checks that the
committed pages match what this script writes. mkdocstrings renders each ``::: name`` from its
docstring when ``make docs`` builds the site.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
AREAS = {
    "core": ["nnshrink.compress_", "nnshrink.finalize", "nnshrink.core.CompressResult",
             "nnshrink.core.Config", "nnshrink.core.LayerSelection", "nnshrink.core.transaction",
             "nnshrink.core.register_handler"],
    "data": ["nnshrink.data.loader", "nnshrink.data.open_data", "nnshrink.data.DataBundle",
             "nnshrink.data.from_factory", "nnshrink.data.from_tensor_file",
             "nnshrink.data.from_image_folder"],
    "models": ["nnshrink.models.create", "nnshrink.models.list_models"],
    "training": ["nnshrink.train.fit", "nnshrink.train.evaluate", "nnshrink.train.task.Task"],
    "measurement": ["nnshrink.profile", "nnshrink.metrics.count_macs",
                    "nnshrink.metrics.measure_latency", "nnshrink.metrics.Report"],
    "files": ["nnshrink.save", "nnshrink.load", "nnshrink.save_checkpoint",
              "nnshrink.load_checkpoint", "nnshrink.export.export_onnx"],
    "recipes": ["nnshrink.recipes.load_recipe", "nnshrink.recipes.run_recipe",
                "nnshrink.recipes.RunResult"],
}  # fmt: skip


def public_configs() -> dict[str, str]:
    """``{kind: "module.Class"}`` for every registered technique config."""
    import nnshrink  # noqa: F401
    from nnshrink.core.config import config_types
    from nnshrink.recipes.schema import _register_techniques

    _register_techniques()
    return {
        kind: f"{cls.__module__}.{cls.__qualname__}"
        for kind, cls in sorted(config_types().items())
        if not kind.startswith(("test-", "recipe-")) and cls.__module__.startswith("nnshrink.")
    }


def pages() -> dict[str, str]:
    """``{file name: content}`` of every API page."""
    out = {}
    configs = public_configs()
    index = ["# API reference", "", "Generated from the docstrings (`docs/gen_api.py`).", "",
             "## Techniques (one config each, applied with `nnshrink.compress_`)", "",
             "| kind (Python / YAML / CLI name) | config |", "|---|---|"]  # fmt: skip
    for kind, path in configs.items():
        name = path.rsplit(".", 1)[1]
        index.append(f"| `{kind}` | [{name}]({kind}.md) |")
        out[f"{kind}.md"] = f"# {name} (`{kind}`)\n\n::: {path}\n"
    index += ["", "## Building blocks", ""]
    for area, names in AREAS.items():
        index.append(f"- [{area}]({area}.md)")
        body = "\n\n".join(f"::: {n}" for n in names)
        out[f"{area}.md"] = f"# {area.capitalize()}\n\n{body}\n"
    out["index.md"] = "\n".join(index) + "\n"
    return out


def main() -> int:
    """Write the pages; remove stale ones."""
    wanted = pages()
    for stale in HERE.joinpath("api").glob("*.md"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        (HERE / "api" / name).write_text(text)
    print(f"wrote {len(wanted)} pages to {HERE / 'api'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
