"""Tests of the ``mmvq adapters`` command (console script, ``python -m mmvq.cli``, and main())."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from plugin_utils import (
    VECTOR_DIST_NAME,
    VECTOR_DIST_VERSION,
    VECTOR_PLUGIN_DIR,
    make_plugin_dist,
    plugin_path,
    subprocess_env,
)

from mmvq import cli

BROKEN_MODULE = 'raise ImportError("mmvq_cli_broken needs the package frobnicate")\n'


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    """A site folder with the distribution mmvq-cli-broken 0.3 (entry point 'broken')."""
    return make_plugin_dist(
        tmp_path / "site",
        "mmvq-cli-broken",
        {"broken": "mmvq_cli_broken:BrokenAdapter"},
        {"mmvq_cli_broken": BROKEN_MODULE},
        version="0.3",
    )


def _run(args: list[str], *sites: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        check=False,
        env=subprocess_env(*sites),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _rows(stdout: str) -> dict[str, list[str]]:
    """Table rows by adapter name: [status, distribution + version, source]."""
    rows = {}
    for line in stdout.splitlines()[1:]:
        if line and not line.startswith(" "):
            name, status, dist, version, source = line.split()
            rows[name] = [status, f"{dist} {version}", source]
    return rows


def test_console_script_lists_every_adapter_and_shows_a_broken_one(
    broken_site: Path, tmp_path: Path
) -> None:
    script = Path(sys.executable).with_name("mmvq")
    assert script.exists(), (
        f"console script {script} missing: is mmvq installed (pip install -e .)?"
    )
    result = _run([str(script), "adapters"], broken_site, VECTOR_PLUGIN_DIR, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "DISTRIBUTION", "SOURCE"]
    rows = _rows(result.stdout)
    assert rows["vector"] == [
        "ok",
        f"{VECTOR_DIST_NAME} {VECTOR_DIST_VERSION}",
        "plugins.vector_adapter:VectorAdapter",
    ]
    assert rows["broken"] == ["broken", "mmvq-cli-broken 0.3", "mmvq_cli_broken:BrokenAdapter"]
    error_line = lines[lines.index(next(x for x in lines if x.startswith("broken"))) + 1]
    assert error_line.startswith("    error: adapter plugin 'broken' failed to load")
    assert "needs the package frobnicate" in error_line
    for name, (status, where, _) in rows.items():  # every row names its distribution and version
        assert status in {"ok", "broken"} and len(where.split()) == 2, (name, status, where)


def test_python_m_json_and_check(broken_site: Path, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "mmvq.cli", "adapters", "--pattern", "[bv]*", "--json", "--check"]
    result = _run(args, broken_site, VECTOR_PLUGIN_DIR, cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # --check: a broken adapter is listed
    assert result.stderr == ""
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert sorted(rows) == ["broken", "vector"]
    assert rows["vector"] == {
        "name": "vector",
        "class": "plugins.vector_adapter:VectorAdapter",
        "distribution": VECTOR_DIST_NAME,
        "version": VECTOR_DIST_VERSION,
        "source": "plugins.vector_adapter:VectorAdapter",
        "error": None,
        "shadows": [],
    }
    assert rows["broken"]["class"] is None and "frobnicate" in rows["broken"]["error"]
    assert (rows["broken"]["distribution"], rows["broken"]["version"]) == ("mmvq-cli-broken", "0.3")


def test_check_passes_when_nothing_is_broken(capsys: pytest.CaptureFixture[str]) -> None:
    with plugin_path(VECTOR_PLUGIN_DIR):
        assert cli.main(["adapters", "--pattern", "vec*", "--check"]) == 0
    assert _rows(capsys.readouterr().out)["vector"][0] == "ok"


def test_no_load_lists_without_importing(
    broken_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with plugin_path(broken_site):
        assert cli.main(["adapters", "--pattern", "broken", "--no-load"]) == 0
        assert "mmvq_cli_broken" not in sys.modules
    rows = _rows(capsys.readouterr().out)
    assert rows == {"broken": ["declared", "mmvq-cli-broken 0.3", "mmvq_cli_broken:BrokenAdapter"]}


# ----------------------------------------------------------------- in-process main()
def test_unknown_name_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with plugin_path(VECTOR_PLUGIN_DIR):
        code = cli.main(["adapters", "vectr"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_ERROR
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "mmvq adapters: error: unknown adapter 'vectr'. Did you mean 'vector'?"
    )
    assert lines[0].endswith("(add --debug for the traceback)")


@pytest.mark.parametrize(
    "argv", [["--debug", "adapters", "vectr"], ["adapters", "vectr", "--debug"]]
)
def test_debug_prints_the_traceback(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with plugin_path(VECTOR_PLUGIN_DIR):
        code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert err.startswith("Traceback (most recent call last):") and "UnknownAdapterError" in err
    assert err.rstrip().splitlines()[-1].startswith("mmvq adapters: error: unknown adapter 'vectr'")


def test_requesting_a_broken_plugin_is_a_one_line_error(
    broken_site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with plugin_path(broken_site, VECTOR_PLUGIN_DIR):
        code = cli.main(["adapters", "broken"])
        shown = cli.main(["adapters", "vector"])  # the other plugin still works
    captured = capsys.readouterr()
    assert code == cli.EXIT_ERROR and shown == 0
    (line,) = captured.err.splitlines()
    assert "entry point 'broken = mmvq_cli_broken:BrokenAdapter'" in line
    assert "distribution mmvq-cli-broken 0.3" in line and "ImportError" in line
    assert _rows(captured.out)["vector"][0] == "ok"


def test_name_and_pattern_together_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["adapters", "vector", "--pattern", "v*"]) == cli.EXIT_ERROR
    assert capsys.readouterr().err.startswith(
        "mmvq adapters: error: give either a NAME or --pattern"
    )


def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


def test_a_new_subcommand_is_one_decorated_function(capsys: pytest.CaptureFixture[str]) -> None:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--times", type=int, default=1)

    @cli.subcommand("echo-test", help="repeat a word", arguments=arguments)
    def echo(args: argparse.Namespace) -> int:
        print("hi " * args.times)
        return 0

    try:
        assert cli.main(["echo-test", "--times", "2"]) == 0
        assert capsys.readouterr().out.strip() == "hi hi"
        with pytest.raises(ValueError, match="defined twice"):
            cli.subcommand("echo-test", help="again")(echo)
    finally:
        cli.parser._COMMANDS.pop("echo-test", None)
    assert "echo-test" not in cli.build_parser().format_help()
