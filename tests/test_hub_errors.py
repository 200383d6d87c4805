"""Network and auth failures of push / pull (mmvq/hub/errors.py): one line that names the
endpoint (and HF_ENDPOINT), where the token came from (never its value) and offline mode, with
the real huggingface_hub client against an endpoint where nothing listens."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hub_server import TOKEN, point_client_at
from tiny_models import (
    tiny_model,
    vector_plugin_fixture,  # noqa: F401 - fixture "vector_plugin"
)

from mmvq.cli import main
from mmvq.hub import HubAccessError
from mmvq.hub.errors import describe_token, is_network_error
from mmvq.model import MultimodalVQ

pytestmark = [pytest.mark.usefixtures("vector_plugin"), pytest.mark.timeout(120)]


@pytest.fixture
def dead_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An HF_ENDPOINT on 127.0.0.1 where nothing listens (a port just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    point_client_at(url, tmp_path / "hf_home", monkeypatch)
    return url


def test_push_with_no_reachable_endpoint_is_one_clear_line(dead_endpoint: str) -> None:
    with pytest.raises(HubAccessError) as info:
        tiny_model().push_to_hub("org/x", token=TOKEN)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"push_to_hub('org/x'): could not reach the Hub at {dead_endpoint} (from HF_ENDPOINT) "
    )
    assert "check that HF_ENDPOINT is right, or unset it for https://huggingface.co" in message
    assert "Token: the token passed as token=..." in message and TOKEN not in message
    assert "HF_HUB_OFFLINE=1" in message
    assert isinstance(info.value, ConnectionError) and is_network_error(info.value.__context__)


def test_download_with_no_reachable_endpoint(dead_endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(HubAccessError, match=r"could not reach the Hub at .*\(from HF_ENDPOINT\)"):
        MultimodalVQ.from_pretrained("org/x", cache_dir=tmp_path / "cache")


def test_offline_mode_is_named(dead_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubAccessError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        tiny_model().push_to_hub("org/x", token=TOKEN)


def test_cli_push_with_no_reachable_endpoint(
    dead_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tiny_model().save_pretrained(tmp_path / "m")
    code = main(["push", str(tmp_path / "m"), "org/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("mmvq push: error: push_to_hub('org/x'): could not reach the Hub at")
    assert "no token (none passed, no HF_TOKEN, not logged in)" in err[0]


def test_token_sources_are_described_without_the_value(
    dead_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert describe_token(False) == "no token (token=False)"
    assert describe_token("hf_secret") == "the token passed as token=..."
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert describe_token(None) == "the token in HF_TOKEN"
