"""No code from a model repo, over real HTTP against the loopback Hub (hub_server.py).

A pushed model whose tokenizer config carries an ``auto_map`` pointing at a ``.py`` file of the
repo (a module that writes a marker file when imported) is refused with one clear error, by the
API and by ``mmvq encode`` run as a real process, with stdin a terminal that answers "y" to any
prompt and with no terminal at all; the marker never appears, nothing is printed on stdout, and
the ``.py`` is never downloaded.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import TOKEN, HubServer, hub_fixture, hub_server_fixture  # noqa: F401 - fixtures
from huggingface_hub import CommitOperationAdd, HfApi
from tiny_models import TEXT_SPEC, tiny_config

from mmvq.hub.safety import DOWNLOAD_PATTERNS, RemoteCodeError
from mmvq.model import MultimodalVQ

pytestmark = pytest.mark.timeout(300)

EVIL_MODULE = "tokenization_evil.py"


def _evil_repo(hub: HubServer, tmp_path: Path, repo: str, *, with_py: bool = True) -> Path:
    """Push a text-only model, then add an ``auto_map`` to its tokenizer config (and the module
    it names). Returns the marker file the module would write."""
    marker = tmp_path / "remote_code_ran.txt"
    model = MultimodalVQ.build({"text": TEXT_SPEC}, tiny_config())
    model.push_to_hub(repo, token=TOKEN)
    folder = "adapters/text/tokenizer"
    config = json.loads(hub.files(repo)[f"{folder}/tokenizer_config.json"])
    config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    operations = [
        CommitOperationAdd(f"{folder}/tokenizer_config.json", json.dumps(config).encode()),
    ]
    if with_py:
        code = f"open({str(marker)!r}, 'w').write('ran')\nclass EvilTokenizer: pass\n"
        operations.append(CommitOperationAdd(f"{folder}/{EVIL_MODULE}", code.encode()))
    HfApi(token=TOKEN).create_commit(repo, operations, commit_message="add custom code")
    return marker


def _encode(repo: str, tmp_path: Path, stdin: object) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mmvq.cli", "encode", repo, "--text", "a small red circle"]
    cmd += ["--cache-dir", str(tmp_path / "cli_cache")]
    return subprocess.run(
        cmd, stdin=stdin, capture_output=True, text=True, timeout=240, env=dict(os.environ)
    )


def test_download_patterns_hold_no_code() -> None:
    assert "config.json" in DOWNLOAD_PATTERNS and "model.safetensors" in DOWNLOAD_PATTERNS
    assert not any(p.endswith(("*", ".py")) for p in DOWNLOAD_PATTERNS)


def test_a_repo_with_custom_code_is_refused_by_the_api(hub: HubServer, tmp_path: Path) -> None:
    marker = _evil_repo(hub, tmp_path, "org/evil")
    cache = tmp_path / "cache"
    with pytest.raises(RemoteCodeError, match=r"carries code .*tokenization_evil\.py"):
        MultimodalVQ.from_pretrained("org/evil", cache_dir=cache)
    assert not marker.exists()
    assert not list(cache.rglob("*.py"))  # refused from the listing: nothing was downloaded
    assert hub.unhandled == []


def test_an_auto_map_without_a_py_file_is_refused(hub: HubServer, tmp_path: Path) -> None:
    marker = _evil_repo(hub, tmp_path, "org/automap", with_py=False)
    with pytest.raises(RemoteCodeError, match=r"an 'auto_map' in .*tokenizer_config\.json"):
        MultimodalVQ.from_pretrained("org/automap", cache_dir=tmp_path / "cache")
    assert not marker.exists()


@pytest.mark.parametrize("terminal", [False, True], ids=["no-terminal", "terminal-answering-y"])
def test_mmvq_encode_refuses_it_with_one_line(
    hub: HubServer, tmp_path: Path, terminal: bool
) -> None:
    marker = _evil_repo(hub, tmp_path, "org/evil-cli")
    if terminal:  # a terminal on stdin that answers "y" to any "run the custom code?" prompt
        parent, child = pty.openpty()
        os.write(parent, b"y\ny\n")
        try:
            proc = _encode("org/evil-cli", tmp_path, child)
        finally:
            os.close(child)
            os.close(parent)
    else:
        proc = _encode("org/evil-cli", tmp_path, subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stdout == ""  # no prompt, no JSON: nothing on stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mmvq encode: error: ")
    assert "carries code" in lines[0] and EVIL_MODULE in lines[0]
    assert not marker.exists()


def test_a_local_directory_with_code_is_refused(tmp_path: Path) -> None:
    model = MultimodalVQ.build({"text": TEXT_SPEC}, tiny_config())
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    MultimodalVQ.from_pretrained(saved)  # a clean save loads
    tokenizer = saved / "adapters" / "text" / "tokenizer"
    (tokenizer / EVIL_MODULE).write_text(f"open({str(tmp_path / 'm')!r}, 'w')\n")
    with pytest.raises(RemoteCodeError, match="tokenization_evil.py"):
        MultimodalVQ.from_pretrained(saved)
    # the adapter's own loader refuses it too (it is called outside from_pretrained as well)
    with pytest.raises(RemoteCodeError, match="tokenization_evil.py"):
        model.adapters["text"].load_extra(saved / "adapters" / "text")
    assert not (tmp_path / "m").exists()
