"""push_to_hub / from_pretrained(repo_id) over real HTTP against the loopback Hub (hub_server.py).

The real huggingface_hub client (create_repo, preupload, ndjson commit, repo_info, tree listing,
HEAD/GET resolve) talks to a ThreadingHTTPServer on 127.0.0.1; nothing leaves the machine.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch
from hub_server import TOKEN, USER, HubServer, git_blob_sha1, hub_fixture, hub_server_fixture  # noqa: F401 - fixtures "hub", "hub_server"
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from tiny_models import (
    TEXT_SPEC,
    tiny_model,
    vector_batch,
    vector_plugin_fixture,  # noqa: F401 - fixture "vector_plugin"
)

from mmvq.hub import DOWNLOAD_PATTERNS, HubAccessError, MultimodalVQHubMixin
from mmvq.hub.format import PretrainedError, PretrainedNotFoundError
from mmvq.model import MultimodalVQ

pytestmark = [pytest.mark.usefixtures("vector_plugin"), pytest.mark.timeout(120)]


def _same_weights(a: MultimodalVQ, b: MultimodalVQ) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(
        sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa
    )


def test_model_class_uses_the_hub_mixin() -> None:
    assert issubclass(MultimodalVQ, MultimodalVQHubMixin)
    assert MultimodalVQ._hub_mixin_info.model_card_data.library_name == "mmvq"


def test_push_then_load_by_repo_id_is_bit_identical(hub: HubServer, tmp_path: Path) -> None:
    model = tiny_model(seed=3, extra={"text": TEXT_SPEC})
    url = model.push_to_hub("org/tiny", token=TOKEN)
    assert url.startswith(f"{hub.url}/org/tiny/commit/")

    files = hub.files("org/tiny")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert any(p.startswith("adapters/text/") for p in files)
    # Every file went inline in the ndjson commit: no LFS, no Xet.
    keys = {line["key"] for line in hub.commit_payloads[-1][1:]}
    assert keys == {"file"}
    pushed = {line["value"]["path"] for line in hub.commit_payloads[-1][1:]}
    assert {"model.safetensors", "config.json", "README.md"} <= pushed

    loaded = MultimodalVQ.from_pretrained("org/tiny", token=TOKEN, cache_dir=tmp_path / "cache")
    assert _same_weights(model, loaded)
    batch = vector_batch(model)
    text = model.adapters["text"]
    batch["text"] = text.collate(
        [text.preprocess("hi there"), text.preprocess("a"), text.preprocess("bc")]
    )
    codes = model.encode(batch)
    got = loaded.encode(batch)
    assert codes.concept and all(
        torch.equal(codes.concept[m], got.concept[m]) for m in codes.concept
    )
    assert all(torch.equal(codes.detail[m], got.detail[m]) for m in codes.detail)
    out, out2 = model.decode(codes), loaded.decode(got)
    assert all(torch.equal(out[m], out2[m]) for m in out)
    assert hub.unhandled == []
    # Only the model's files were downloaded into the cache.
    snapshot = next((tmp_path / "cache").glob("models--org--tiny/snapshots/*"))
    downloaded = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    assert "README.md" not in downloaded and "config.json" in downloaded
    assert any(d.startswith("adapters/text/") for d in downloaded)


def test_repo_and_local_directory_hold_the_same_model(hub: HubServer, tmp_path: Path) -> None:
    model = tiny_model(seed=4)
    model.push_to_hub("org/same", token=TOKEN)
    model.save_pretrained(tmp_path / "local")
    files = hub.files("org/same")
    for name in ("config.json", "model.safetensors"):
        assert files[name] == (tmp_path / "local" / name).read_bytes(), name
    from_dir = MultimodalVQ.from_pretrained(tmp_path / "local")
    from_hub = MultimodalVQ.from_pretrained(
        "org/same", cache_dir=tmp_path / "cache"
    )  # public: no token
    assert _same_weights(from_dir, from_hub) and _same_weights(model, from_hub)


def test_resolve_serves_etag_commit_and_length(hub: HubServer) -> None:
    tiny_model().push_to_hub("org/headers", token=TOKEN)
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url("org/headers", "config.json"))
    data = hub.files("org/headers")["config.json"]
    assert meta.etag == git_blob_sha1(data) and meta.size == len(data)
    assert meta.commit_hash == hub.repos["org/headers"].branches["main"]


def test_branches_revisions_and_commit_ids(hub: HubServer, tmp_path: Path) -> None:
    first, second = tiny_model(seed=5), tiny_model(seed=6)
    first.push_to_hub("org/revs", token=TOKEN)
    main_commit = hub.repos["org/revs"].branches["main"]
    second.push_to_hub("org/revs", token=TOKEN, branch="dev")
    assert hub.repos["org/revs"].branches["main"] == main_commit  # main untouched
    cache = tmp_path / "cache"
    assert _same_weights(MultimodalVQ.from_pretrained("org/revs", cache_dir=cache), first)
    assert _same_weights(
        MultimodalVQ.from_pretrained("org/revs", revision="dev", cache_dir=cache), second
    )
    by_sha = MultimodalVQ.from_pretrained("org/revs", revision=main_commit, cache_dir=cache)
    assert _same_weights(by_sha, first)
    with pytest.raises(
        PretrainedNotFoundError, match="Hub repo 'org/revs' at revision 'nope': no such revision"
    ):
        MultimodalVQ.from_pretrained("org/revs", revision="nope", cache_dir=cache)


def test_private_repo_needs_the_token(hub: HubServer, tmp_path: Path) -> None:
    model = tiny_model(seed=7)
    model.push_to_hub("org/secret", token=TOKEN, private=True)
    assert hub.repos["org/secret"].private
    with pytest.raises(PretrainedNotFoundError, match="was not found; .*private pass token="):
        MultimodalVQ.from_pretrained("org/secret", cache_dir=tmp_path / "anon")
    loaded = MultimodalVQ.from_pretrained("org/secret", token=TOKEN, cache_dir=tmp_path / "auth")
    assert _same_weights(model, loaded)


def test_repo_id_without_namespace_goes_to_the_token_user(hub: HubServer) -> None:
    tiny_model().push_to_hub("bare", token=TOKEN)
    assert f"{USER}/bare" in hub.repos


def test_push_needs_write_access(hub: HubServer) -> None:
    with pytest.raises(HubAccessError) as info:
        tiny_model().push_to_hub("org/denied")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("push_to_hub('org/denied'): the Hub at " + hub.url)
    assert "(from HF_ENDPOINT) refused the request (401 Unauthorized)" in message
    assert "no token (none passed, no HF_TOKEN, not logged in)" in message
    assert "hf auth login" in message
    assert isinstance(info.value.__context__, HfHubHTTPError)  # raised from the client's error
    assert "org/denied" not in hub.repos


def test_second_push_removes_stale_files_and_skips_unchanged(
    hub: HubServer, tmp_path: Path
) -> None:
    from PIL import Image

    image = tmp_path / "grid.png"
    Image.new("RGB", (8, 8), "red").save(image)
    model = tiny_model(seed=8)
    model.push_to_hub("org/stale", token=TOKEN, sample_image=image)
    assert "sample_grid.png" in hub.files("org/stale")
    model.push_to_hub("org/stale", token=TOKEN)
    files = hub.files("org/stale")
    assert "sample_grid.png" not in files  # the card no longer embeds it, so the repo drops it
    last = hub.commit_payloads[-1]
    sent = {line["value"]["path"] for line in last if line["key"] == "file"}
    assert (
        "model.safetensors" not in sent
    )  # unchanged: preupload returned its oid, the client skipped it
    assert {line["value"]["path"] for line in last if line["key"] == "deletedFile"} == {
        "sample_grid.png"
    }


def test_card_metadata_is_validated_by_the_hub(hub: HubServer) -> None:
    tiny_model().push_to_hub("org/card", token=TOKEN, metrics={"perplexity/a": 3.5})
    assert ("POST", "/api/validate-yaml") in hub.requests
    readme = hub.files("org/card")["README.md"].decode()
    assert "library_name: mmvq" in readme and 'MultimodalVQ.from_pretrained("org/card")' in readme


def test_missing_repo_and_repo_without_config(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(PretrainedNotFoundError, match="Hub repo 'org/none' was not found"):
        MultimodalVQ.from_pretrained("org/none", cache_dir=tmp_path / "c1")
    api = HfApi(token=TOKEN)
    api.create_repo("org/other")
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="notes.txt", repo_id="org/other")
    with pytest.raises(PretrainedNotFoundError, match="Hub repo 'org/other' has no config.json"):
        MultimodalVQ.from_pretrained("org/other", cache_dir=tmp_path / "c2")


def test_invalid_repo_id(hub: HubServer) -> None:
    with pytest.raises(PretrainedError, match="neither a directory nor a valid Hub repo id"):
        MultimodalVQ.from_pretrained("bad id with spaces")


def test_download_patterns_cover_adapter_extras() -> None:
    import fnmatch

    assert any(
        fnmatch.fnmatch("adapters/text/tokenizer/tokenizer_config.json", p)
        for p in DOWNLOAD_PATTERNS
    )
    assert not any(fnmatch.fnmatch("README.md", p) for p in DOWNLOAD_PATTERNS)


def test_server_speaks_the_commit_protocol(hub: HubServer) -> None:
    """The loopback server itself: a hand-made ndjson commit lands in the repo."""
    import httpx2

    HfApi(token=TOKEN).create_repo("org/raw")
    lines = [
        {"key": "header", "value": {"summary": "raw", "description": ""}},
        {
            "key": "file",
            "value": {
                "path": "x.bin",
                "content": base64.b64encode(b"\x00\x01").decode(),
                "encoding": "base64",
            },
        },
    ]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    r = httpx2.post(
        f"{hub.url}/api/models/org/raw/commit/main",
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200 and hub.files("org/raw")["x.bin"] == b"\x00\x01"
    r = httpx2.post(f"{hub.url}/api/models/org/raw/commit/main", content=body)
    assert r.status_code == 401
