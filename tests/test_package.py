"""The package's public names (mmvq/__init__.py): lazy, complete, and ``mmvq.train`` the
function."""

from __future__ import annotations

import inspect
import subprocess
import sys

import mmvq


def test_every_public_name_resolves_and_is_listed() -> None:
    assert sorted(mmvq.__all__) == sorted([*mmvq._EXPORTS, "__version__"])
    for name in mmvq._EXPORTS:
        assert getattr(mmvq, name) is not None
    assert set(mmvq.__all__) <= set(dir(mmvq))


def test_train_is_the_function_even_after_importing_the_training_package() -> None:
    import mmvq.training

    assert inspect.isfunction(mmvq.train) and mmvq.train is mmvq.training.train
    assert mmvq.train.__module__ == "mmvq.training.loop"


def test_import_mmvq_is_cheap() -> None:
    code = "import sys, mmvq; print(sorted(m for m in sys.modules if m.startswith('mmvq')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['mmvq']"
