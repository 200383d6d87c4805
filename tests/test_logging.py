"""mmvq's logging (mmvq/utils/logging.py): INFO visible by default, mmvq.set_verbosity,
MMVQ_VERBOSITY, main process only (before and after accelerate's state exists)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

import mmvq
from mmvq.utils.logging import get_logger, set_propagation

SCRIPT = """
from mmvq.utils.logging import get_logger
log = get_logger("mmvq.probe")
log.info("info line")
log.warning("warning line")
log.info("every rank", main_process_only=False)
"""


def _run(env: dict[str, str]) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("MMVQ_VERBOSITY", "RANK")}
    full.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=full, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


@pytest.fixture
def verbosity():
    before = mmvq.get_verbosity()
    yield
    mmvq.set_verbosity(before)


def test_info_is_visible_by_default_and_set_verbosity_hides_it(capsys, verbosity) -> None:
    log = get_logger("mmvq.test")
    assert mmvq.get_verbosity() == logging.INFO
    log.info("shown %d", 1)
    assert "INFO mmvq.test: shown 1" in capsys.readouterr().err
    mmvq.set_verbosity("warning")
    log.info("hidden")
    log.warning("still shown")
    err = capsys.readouterr().err
    assert "hidden" not in err and "WARNING mmvq.test: still shown" in err
    mmvq.set_verbosity(logging.DEBUG)
    assert mmvq.get_verbosity() == logging.DEBUG
    with pytest.raises(ValueError, match=r"set_verbosity\(level\)='loud' is not a verbosity"):
        mmvq.set_verbosity("loud")


def test_records_reach_the_root_logger_only_when_asked(verbosity) -> None:
    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    root, collect = logging.getLogger(), Collect()
    root.addHandler(collect)
    try:
        log = get_logger("mmvq.test")
        log.info("private")  # an application's own handlers do not print it a second time
        set_propagation(True)
        log.info("shared")
    finally:
        set_propagation(False)
        root.removeHandler(collect)
    assert collect.messages == ["shared"]


@pytest.mark.parametrize(
    ("env", "shown", "hidden"),
    [
        ({}, ["info line", "warning line", "every rank"], []),
        ({"MMVQ_VERBOSITY": "warning"}, ["warning line"], ["info line"]),
        ({"MMVQ_VERBOSITY": "ERROR"}, [], ["info line", "warning line"]),
        ({"RANK": "1"}, ["every rank"], ["info line", "warning line"]),  # not the main process
    ],
)
def test_environment(env: dict[str, str], shown: list[str], hidden: list[str]) -> None:
    err = _run(env)
    assert all(s in err for s in shown), err
    assert not any(h in err for h in hidden), err


def test_a_bad_environment_value_is_said_and_ignored() -> None:
    err = _run({"MMVQ_VERBOSITY": "chatty"})
    assert "MMVQ_VERBOSITY='chatty' is not a verbosity; use one of" in err
    assert "info line" in err


def test_after_accelerate_state_exists_the_main_process_logs(capsys) -> None:
    from accelerate import PartialState

    PartialState()
    get_logger("mmvq.test").info("with state")
    assert "INFO mmvq.test: with state" in capsys.readouterr().err  # no [RANK 0] prefix
