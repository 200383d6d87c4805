"""from_pretrained's Hugging Face arguments (mmvq/hub/loading.py and the mixin): dtype /
torch_dtype, device_map / map_location, subfolder, strict, the download arguments against the
loopback Hub, and a clear error for an argument it does not take."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from hub_server import TOKEN, HubServer, hub_fixture, hub_server_fixture  # noqa: F401 - fixtures "hub", "hub_server"
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file
from tiny_models import (
    tiny_model,
    vector_plugin_fixture,  # noqa: F401 - fixture "vector_plugin"
    vector_values,
)

from mmvq.hub.format import PretrainedError, PretrainedNotFoundError
from mmvq.hub.loading import file_dtype, resolve_device, resolve_dtype
from mmvq.model import MultimodalVQ

pytestmark = [pytest.mark.usefixtures("vector_plugin"), pytest.mark.timeout(120)]


def _dtypes(model: MultimodalVQ) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters()}


def _same_weights(a: MultimodalVQ, b: MultimodalVQ) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    tiny_model(seed=1).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


# ------------------------------------------------------------------------------ dtype
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, torch.float32),
        ({"dtype": torch.bfloat16}, torch.bfloat16),
        ({"dtype": "float16"}, torch.float16),
        ({"torch_dtype": torch.bfloat16}, torch.bfloat16),
        ({"torch_dtype": "bf16", "dtype": torch.bfloat16}, torch.bfloat16),
    ],
)
def test_dtype_changes_the_parameter_dtype(saved: Path, kwargs: dict, expected) -> None:
    model = MultimodalVQ.from_pretrained(saved, **kwargs)
    assert _dtypes(model) == {expected}
    stats = [b for n, b in model.codebook.named_buffers() if b.is_floating_point()]
    assert stats and all(b.dtype == torch.float32 for b in stats)  # codebook statistics fp32
    rows = zip(vector_values(8, 3, seed=0), vector_values(12, 3, seed=1))
    batch = model.prepare([{"a": a, "b": b} for a, b in rows])  # inputs cast to the weights' dtype
    assert batch["a"]["values"].dtype == expected
    codes = model.encode(batch)
    levels = [c for _, level in codes.levels() for c in level.values()]
    assert codes.detail and all(c.dtype == torch.long and c.shape[0] == 3 for c in levels)
    assert {r.dtype for r in model.decode(codes).values()} == {expected}


def test_dtype_auto_is_the_dtype_the_weights_were_saved_in(tmp_path: Path) -> None:
    model = tiny_model(seed=2)
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    assert file_dtype(tmp_path / "bf16" / "model.safetensors") == torch.bfloat16
    assert _dtypes(MultimodalVQ.from_pretrained(tmp_path / "bf16", dtype="auto")) == {
        torch.bfloat16
    }
    assert _dtypes(MultimodalVQ.from_pretrained(tmp_path / "bf16")) == {torch.float32}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": "int8"}, ValueError, r"from_pretrained\(dtype='int8'\) is not a dtype"),
        ({"dtype": torch.int64}, ValueError, "the weights need a floating-point dtype"),
        (
            {"torch_dtype": torch.float16, "dtype": torch.bfloat16},
            ValueError,
            "pass one of them",
        ),
        ({"device_map": "bogus"}, ValueError, r"device_map='bogus'\) is not a device"),
        ({"device_map": "meta"}, ValueError, "the meta device holds no weights"),
        ({"device_map": {"a": "cpu", "b": "cuda:1"}}, ValueError, "splits the model"),
        ({"device_map": "cpu", "map_location": "cpu:1"}, ValueError, "pass one of them"),
        ({"subfolder": "../up"}, ValueError, "without '..'"),
        ({"subfolder": 3}, TypeError, "must be a str"),
        ({"strict": "yes"}, TypeError, r"strict=...\) must be True or False"),
        (
            {"low_cpu_mem_usage": True, "trust_remote_code": False},
            TypeError,
            r"unexpected keyword argument\(s\) \['low_cpu_mem_usage', 'trust_remote_code'\]; "
            r"it accepts \['revision', 'cache_dir'",
        ),
    ],
)
def test_bad_arguments_name_the_argument(saved: Path, kwargs: dict, error, match: str) -> None:
    with pytest.raises(error, match=match):
        MultimodalVQ.from_pretrained(saved, **kwargs)


def test_resolve_dtype_names() -> None:
    assert resolve_dtype(None, None) is None and resolve_dtype("auto", None) == "auto"
    assert resolve_dtype(None, "torch.float16") == torch.float16


# ----------------------------------------------------------------------------- device
@pytest.mark.parametrize(
    "device_map", ["cpu", "auto", torch.device("cpu"), {"": "cpu"}, {"a": "cpu", "b": "cpu"}]
)
def test_device_map_places_the_model(saved: Path, device_map) -> None:
    model = MultimodalVQ.from_pretrained(saved, device_map=device_map)
    expected = resolve_device(device_map, None)
    assert model.device == expected and all(p.device == expected for p in model.parameters())
    if device_map == "auto":  # the first accelerator present, else the CPU
        mps = getattr(torch.backends, "mps", None)
        if torch.cuda.is_available():
            assert expected == torch.device("cuda", torch.cuda.current_device())
        elif not (mps is not None and mps.is_available()):
            assert expected.type in ("cpu", "xpu")
    else:
        assert expected == torch.device("cpu")
    assert MultimodalVQ.from_pretrained(saved, map_location="cpu").device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_a_device_that_is_not_here_is_refused_before_loading(saved: Path) -> None:
    with pytest.raises(ValueError, match=r"device_map='cuda'\): no cuda device is available here"):
        MultimodalVQ.from_pretrained(saved, device_map="cuda")
    with pytest.raises(ValueError, match=r"device_map=0\): no cuda device"):
        MultimodalVQ.from_pretrained(saved, device_map=0)


# --------------------------------------------------------------------------- subfolder
def test_subfolder_of_a_local_directory(tmp_path: Path) -> None:
    model = tiny_model(seed=3)
    model.save_pretrained(tmp_path / "repo" / "checkpoints" / "v2")
    loaded = MultimodalVQ.from_pretrained(tmp_path / "repo", subfolder="checkpoints/v2")
    assert _same_weights(model, loaded)
    with pytest.raises(PretrainedNotFoundError, match="and the subfolder=... it was saved in"):
        MultimodalVQ.from_pretrained(tmp_path / "repo", subfolder="checkpoints/v3")


def test_subfolder_of_a_hub_repo(hub: HubServer, tmp_path: Path) -> None:
    top, nested = tiny_model(seed=4), tiny_model(seed=5)
    top.push_to_hub("org/multi", token=TOKEN)
    nested.save_pretrained(tmp_path / "nested")
    HfApi(token=TOKEN).upload_folder(
        repo_id="org/multi", folder_path=tmp_path / "nested", path_in_repo="v2"
    )
    cache = tmp_path / "cache"
    loaded = MultimodalVQ.from_pretrained(
        "org/multi", subfolder="v2", cache_dir=cache, dtype=torch.bfloat16
    )
    assert _same_weights(nested.to(torch.bfloat16), loaded)
    snapshot = next(cache.glob("models--org--multi/snapshots/*"))
    downloaded = {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()}
    assert downloaded == {"v2/config.json", "v2/model.safetensors"}  # only the subfolder's model
    assert _same_weights(top, MultimodalVQ.from_pretrained("org/multi", cache_dir=cache))
    with pytest.raises(PretrainedNotFoundError, match=r"subfolder 'v9' has no config.json"):
        MultimodalVQ.from_pretrained("org/multi", subfolder="v9", cache_dir=cache)


# ----------------------------------------------------------------------------- strict
def test_strict_false_loads_what_matches_and_lists_the_rest(saved: Path) -> None:
    weights = saved / "model.safetensors"
    state = load_file(str(weights))
    dropped = sorted(state)[0]
    state.pop(dropped)
    state["extra.weight"] = torch.zeros(2)
    save_file(state, str(weights))
    with pytest.raises(PretrainedError, match="missing from the file"):
        MultimodalVQ.from_pretrained(saved)  # strict by default
    with pytest.warns(UserWarning, match=r"strict=False: missing from the file, left as") as got:
        model = MultimodalVQ.from_pretrained(saved, strict=False)
    message = str(got[0].message)
    assert dropped in message and "unexpected in the file, skipped (1): extra.weight" in message
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    state[sorted(state)[1]] = torch.zeros(7, 7)  # a shape mismatch is an error either way
    save_file(state, str(weights))
    with pytest.raises(PretrainedError, match="shape mismatches"):
        MultimodalVQ.from_pretrained(saved, strict=False)


# ------------------------------------------------------------------ download arguments
def test_local_files_only_and_force_download(hub: HubServer, tmp_path: Path) -> None:
    model = tiny_model(seed=6)
    model.push_to_hub("org/cached", token=TOKEN)
    cache = tmp_path / "cache"
    with pytest.raises(
        PretrainedNotFoundError, match="not in the local cache and local_files_only=True"
    ):
        MultimodalVQ.from_pretrained("org/cached", cache_dir=cache, local_files_only=True)
    MultimodalVQ.from_pretrained("org/cached", cache_dir=cache, revision="main")
    before = len(hub.requests)
    offline = MultimodalVQ.from_pretrained("org/cached", cache_dir=cache, local_files_only=True)
    assert _same_weights(model, offline) and len(hub.requests) == before  # no request made
    # a damaged cached file is used as it is, until force_download fetches it again
    blob = next(cache.glob("models--org--cached/snapshots/*/model.safetensors")).resolve()
    blob.write_bytes(b"\x00" * 16)
    with pytest.raises(PretrainedError, match="not a valid safetensors file"):
        MultimodalVQ.from_pretrained("org/cached", cache_dir=cache)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = MultimodalVQ.from_pretrained("org/cached", cache_dir=cache, force_download=True)
    assert _same_weights(model, fresh)


def test_token_and_revision_reach_the_download(hub: HubServer, tmp_path: Path) -> None:
    first, second = tiny_model(seed=7), tiny_model(seed=8)
    first.push_to_hub("org/private", token=TOKEN, private=True)
    second.push_to_hub("org/private", token=TOKEN, branch="v2")
    cache = tmp_path / "cache"
    with pytest.raises(PretrainedNotFoundError, match="private pass token="):
        MultimodalVQ.from_pretrained("org/private", cache_dir=cache, revision="v2")
    loaded = MultimodalVQ.from_pretrained(
        "org/private", cache_dir=cache, revision="v2", token=TOKEN
    )
    assert _same_weights(second, loaded)
