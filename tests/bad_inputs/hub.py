"""Saved models and Hub repos: missing or damaged files, hostile configs, code in a repo. The Hub
cases run against the loopback Hub (``ctx.hub``)."""

from __future__ import annotations

import json
import shutil

from bad_inputs.helpers import (
    MultimodalVQ,
    PretrainedError,
    PretrainedNotFoundError,
    RemoteCodeError,
    case,
)


def _copy(ctx):
    target = ctx.tmp / "model"
    shutil.copytree(ctx.model_dir, target)
    return target


def _load_with_config(ctx, edit):
    """Load a copy of the saved model whose ``config.json`` went through ``edit`` (in place)."""
    model = _copy(ctx)
    config = json.loads((model / "config.json").read_text())
    edit(config)
    (model / "config.json").write_text(json.dumps(config))
    MultimodalVQ.from_pretrained(model)


@case("hub", PretrainedNotFoundError, r"has no config\.json: it is not a model saved by mmvq")
def directory_without_config(ctx):
    (ctx.tmp / "empty").mkdir()
    MultimodalVQ.from_pretrained(ctx.tmp / "empty")


@case("hub", PretrainedError, r"config\.json is not valid JSON")
def damaged_config_json(ctx):
    model = _copy(ctx)
    (model / "config.json").write_text("{")
    MultimodalVQ.from_pretrained(model)


@case("hub", PretrainedError, r"adapters: modality name '\.\./\.\./x' is not allowed")
def modality_name_that_walks_out_of_the_directory(ctx):
    def rename(config):
        config["adapters"]["../../x"] = config["adapters"].pop("text")
        config["modalities"] = [m if m != "text" else "../../x" for m in config["modalities"]]

    _load_with_config(ctx, rename)


@case("hub", PretrainedError, r"model\.safetensors is not a valid safetensors file")
def truncated_weights(ctx):
    model = _copy(ctx)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    MultimodalVQ.from_pretrained(model)


@case("hub", PretrainedError, r"format_version 9\.0 .* upgrade mmvq")
def format_from_the_future(ctx):
    _load_with_config(ctx, lambda config: config.update(format_version="9.0"))


@case("hub", RemoteCodeError, r"carries code \(code file\(s\) setup\.py\)")
def local_model_directory_with_a_script(ctx):
    model = _copy(ctx)
    (model / "setup.py").write_text("print('hi')\n")
    MultimodalVQ.from_pretrained(model)


@case("hub", PretrainedError, r"'bad name!' is neither a directory nor a valid Hub repo id")
def invalid_repo_id(ctx):
    MultimodalVQ.from_pretrained("bad name!")


@case("hub", PretrainedNotFoundError, r"Hub repo 'org/missing' was not found")
def repo_that_does_not_exist(ctx):
    MultimodalVQ.from_pretrained("org/missing", cache_dir=ctx.tmp / "cache")


@case("hub", PretrainedNotFoundError, r"at revision 'v9': no such revision")
def revision_that_does_not_exist(ctx):
    _push(ctx, "org/tiny")
    MultimodalVQ.from_pretrained("org/tiny", revision="v9", cache_dir=ctx.tmp / "cache")


@case("hub", RemoteCodeError, r"Hub repo 'org/with-code' carries code .*modeling_x\.py")
def repo_with_a_python_file(ctx):
    from hub_server import TOKEN
    from huggingface_hub import CommitOperationAdd, HfApi

    _push(ctx, "org/with-code")
    add = CommitOperationAdd("modeling_x.py", b"import os\n")
    HfApi(token=TOKEN).create_commit("org/with-code", [add], commit_message="code")
    MultimodalVQ.from_pretrained("org/with-code", cache_dir=ctx.tmp / "cache")


@case("hub", RemoteCodeError, r"an 'auto_map' in config\.json")
def repo_whose_config_has_an_auto_map(ctx):
    from hub_server import TOKEN
    from huggingface_hub import CommitOperationAdd, HfApi

    _push(ctx, "org/auto-map")
    config = json.loads((ctx.model_dir / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "other/repo--modeling.Model"}
    add = CommitOperationAdd("config.json", json.dumps(config).encode())
    HfApi(token=TOKEN).create_commit("org/auto-map", [add], commit_message="auto_map")
    MultimodalVQ.from_pretrained("org/auto-map", cache_dir=ctx.tmp / "cache")


def _push(ctx, repo):
    from hub_server import TOKEN

    MultimodalVQ.from_pretrained(ctx.model_dir).push_to_hub(repo, token=TOKEN)
