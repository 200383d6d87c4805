"""The README's Python examples run as written (so the README cannot drift from the API)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_opens_with_the_two_setup_commands():
    text = README.read_text(encoding="utf-8")
    bash = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert "accelerate launch recipes/fuse_image_text.py" in bash[0]
    assert "pytest" in bash[1]
    assert text.index("```bash") < text.index("```python")


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = python_blocks()[index]
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


def test_contributing_plugin_example_passes_the_contract_kit(tmp_path, monkeypatch):
    """CONTRIBUTING.md's adapter example, then its check_adapter snippet, run as written."""
    monkeypatch.chdir(tmp_path)
    text = (README.parent / "CONTRIBUTING.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace = {"__name__": "__contributing__"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"CONTRIBUTING.md python block {i}", "exec"), namespace)
    tests = [v for k, v in namespace.items() if k.startswith("test_") and callable(v)]
    assert tests, "the contract-kit snippet defines a test"
    for fn in tests:
        fn()
