"""The catalogue of bad inputs and faults (``tests/bad_inputs/``), table-driven: each case must
raise exactly its error type, with a message that names what is wrong (the field, row, option or
file); a CLI case must exit with code 2 and one error line. README's "Reliability" section lists
the catalogue's classes and its size, checked here too.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from bad_inputs import CASES, KINDS, Case, CliFailure, Ctx
from hub_server import hub_fixture, hub_server_fixture  # noqa: F401 - fixtures "hub", "hub_server"
from train_helpers import clean_accelerate, reset_accelerate, tiny_data  # noqa: F401 - autouse

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def data():
    return tiny_data(num_train=24, num_eval=4)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data) -> Path:
    """A finished 2-step run with checkpoints 1 and 2 (``bad_inputs.helpers.RUN``)."""
    from bad_inputs.helpers import train_config
    from train_helpers import tiny_model

    from mmvq.training import train

    reset_accelerate()
    out = tmp_path_factory.mktemp("catalogue") / "run"
    train(tiny_model(), data[0], train_config(out))
    reset_accelerate()
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A saved text + image model."""
    from tiny_models import IMAGE_SPEC, TEXT_SPEC, tiny_config

    from mmvq.model import MultimodalVQ

    out = tmp_path_factory.mktemp("catalogue") / "model"
    MultimodalVQ.build({"text": TEXT_SPEC, "image": IMAGE_SPEC}, tiny_config()).save_pretrained(out)
    return out


def _ctx(tmp_path: Path, finished_run: Path, model_dir: Path, data) -> Ctx:
    def run_dir() -> Path:
        copy = tmp_path / "run"
        shutil.copytree(finished_run, copy)
        (copy / ".lock").unlink(missing_ok=True)
        return copy

    return Ctx(tmp=tmp_path, run_dir=run_dir, model_dir=model_dir, data=data)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}:{c.name}" for c in CASES])
def test_bad_input(case: Case, request, tmp_path, finished_run, model_dir, data) -> None:
    ctx = _ctx(tmp_path, finished_run, model_dir, data)
    if case.kind == "hub":
        ctx.hub = request.getfixturevalue("hub")
    with pytest.raises(BaseException) as info:
        case.run(ctx)
    error = info.value
    assert type(error) is case.error, f"{type(error).__name__}: {error}"
    message = str(error)
    if isinstance(error, CliFailure):
        assert error.code == 2, (error.code, message)
        lines = [line for line in message.splitlines() if ": error: " in line]
        assert len(lines) == 1, message
        message = lines[0]
    assert re.search(case.match, message, re.DOTALL), message


def test_the_catalogue_is_large_and_covers_every_kind() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), [n for n, k in Counter(names).items() if k > 1]
    assert len(CASES) >= 80, len(CASES)
    assert {c.kind for c in CASES} == set(KINDS)


def test_readme_lists_the_catalogue() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Reliability", 1)[1].split("\n## ", 1)[0]
    assert f"{len(CASES)} bad inputs and faults" in section
    counts = Counter(c.kind for c in CASES)
    for kind in KINDS:
        assert f"| {kind} | {counts[kind]} |" in section, kind
