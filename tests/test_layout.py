"""The layout rules of the codebase (tests/layout_rules.py), on the real tree and, to show that
each rule can fail, on small synthetic sources.

* no import cycle among mmvq's modules;
* no mmvq module imports the built-in adapters (``mmvq_adapters``);
* no mmvq module names a built-in modality in code (docstrings and comments are prose);
* no module of mmvq/ or adapters/ over 500 lines, no function over 80 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from layout_rules import (
    find_cycles,
    import_edges,
    imported_modules,
    modality_names,
    module_name,
    oversized,
)

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# English uses of "image" that name no modality: the model card's picture (public API names)
# and PIL's class.
ALLOWED = ("sample_image", "sample-image", "SampleImage", "PIL.Image")


def _sources(package: str) -> dict[str, tuple[str, bool]]:
    return {
        module_name(path, ROOT): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _files() -> list[Path]:
    return sorted([*(ROOT / "mmvq").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")])


# ----------------------------------------------------------------------- the real tree
def test_no_import_cycle_among_mmvq_modules() -> None:
    sources = _sources("mmvq")
    assert len(sources) > 50  # the walk really found the package
    edges = import_edges(sources)
    assert "mmvq.quantize.codebook" in edges["mmvq.model"] or "mmvq.quantize" in edges["mmvq.model"]
    assert find_cycles(edges) == []


def test_mmvq_never_imports_the_builtin_adapters() -> None:
    offenders = [
        module
        for module, (source, is_package) in _sources("mmvq").items()
        for candidates in imported_modules(source, module, is_package)
        if candidates[-1].split(".")[0] == "mmvq_adapters"
    ]
    assert offenders == []


def test_mmvq_names_no_builtin_modality_in_code() -> None:
    found = {
        module: hits
        for module, (source, _) in _sources("mmvq").items()
        if (hits := modality_names(source, allowed=ALLOWED))
    }
    assert found == {}


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path: Path) -> None:
    assert oversized(path.read_text(encoding="utf-8"), MAX_MODULE_LINES, MAX_FUNCTION_LINES) == []


def test_every_module_opens_with_its_purpose() -> None:
    missing = [
        str(path.relative_to(ROOT))
        for path in _files()
        if not ast.get_docstring(ast.parse(path.read_text()))
    ]
    assert missing == []


def test_every_package_has_an_init_and_is_installed() -> None:
    """Each folder of modules is a package listed in pyproject (a clean clone that lost an
    ``__init__.py``, e.g. to .gitignore, fails here)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {path.parent for path in _files()}
    names = set()
    for folder in folders:
        assert (folder / "__init__.py").is_file(), f"{folder} has no __init__.py"
        parts = folder.relative_to(ROOT).parts
        names.add(".".join(("mmvq_adapters", *parts[1:]) if parts[0] == "adapters" else parts))
    assert names == listed


# --------------------------------------------------------- each rule fails when it should
def test_a_cycle_is_found_through_lazy_and_relative_imports() -> None:
    sources = {
        "pkg": ("", True),
        "pkg.model": ("from pkg.hub import Mixin\n", False),
        "pkg.hub": ("def load():\n    from .model import Config\n", False),
        "pkg.util": ("import pkg.model\n", False),
    }
    edges = import_edges(sources)
    assert edges["pkg.hub"] == {"pkg.model"} and edges["pkg.util"] == {"pkg.model"}
    assert find_cycles(edges) == [["pkg.hub", "pkg.model"]]
    # annotations under TYPE_CHECKING are not imports that run
    sources["pkg.hub"] = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.model import Config\n",
        False,
    )
    assert find_cycles(import_edges(sources)) == []
    # `from pkg import model` is the submodule, not the package
    sources["pkg"] = ("from pkg import model\n", True)
    assert import_edges(sources)["pkg"] == {"pkg.model"}


def test_an_import_of_the_adapters_is_seen() -> None:
    source = "def f():\n    import mmvq_adapters.shapes\n    from mmvq_adapters import image\n"
    names = [c[-1] for c in imported_modules(source, "mmvq.x")]
    assert names == ["mmvq_adapters.shapes", "mmvq_adapters"]


def test_naming_a_modality_in_code_is_found_and_prose_is_not() -> None:
    source = '''"""Reads image columns (prose is fine)."""
# a comment about text
COLUMNS = {"image": "img"}
FLAG = "--audio_column"
PAIR = "text->image"
MESSAGE = "pass an image file"
def run(text_column, sample_image=None):
    """Docstring about audio."""
    ImageAdapter = None
'''
    found = modality_names(source, allowed=ALLOWED)
    assert [f.split(":")[0] for f in found] == ["3", "4", "5", "7", "9"]
    assert "name 'text_column'" in found[3] and "name 'ImageAdapter'" in found[4]


def test_oversized_modules_and_functions_are_found() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    source = f'"""Doc."""\n\n\n@decorator\ndef big():\n{body}\n\n\ndef small():\n    pass\n'
    assert oversized(source, 500, 80) == ["big (line 4): 83 lines > 80"]
    assert oversized(source, 50, 90) == ["module: 90 lines > 50"]
