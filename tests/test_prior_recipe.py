"""The prior's recipe (recipes/train_prior.py over mmvq/prior/recipe.py) and the prior on the Hub
(mmvq/prior/hub.py: the ``prior/`` folder of the tokenizer model's repo), against the loopback
Hub of hub_server.py."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hub_server import TOKEN, HubServer, hub_fixture, hub_server_fixture  # noqa: F401 - fixtures
from huggingface_hub import CommitOperationAdd, HfApi
from train_helpers import clean_accelerate, tiny_model  # noqa: F401 (autouse fixture)

from mmvq.hub.card_inputs import cell
from mmvq.hub.safety import RemoteCodeError
from mmvq.model import MultimodalVQ
from mmvq.prior import MultimodalPrior, MultimodalTokenizer, PriorConfig, SpanSpec
from mmvq.prior.recipe import parse_prior_args, prior_recipe_main

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = [
    "--builtin_num_train", "12", "--builtin_num_eval", "4", "--builtin_resolution", "16",
    "--max_steps", "3", "--per_device_batch_size", "4", "--lr_warmup_steps", "1",
    "--hidden_size", "16", "--num_hidden_layers", "1", "--num_attention_heads", "2",
    "--report_to", "none", "--tqdm", "false", "--cpu", "--max_eval_samples", "4", "--threads", "0",
]  # fmt: skip


def _recipe_defaults() -> dict:
    spec = importlib.util.spec_from_file_location("train_prior", ROOT / "recipes/train_prior.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DEFAULTS


def _same_logits(a: MultimodalPrior, b: MultimodalPrior) -> bool:
    ids = torch.tensor([[a.tokenizer.bos_token_id, a.tokenizer.begin_token_id("image")]])
    with torch.no_grad():
        return torch.equal(a.lm(input_ids=ids).logits, b.lm(input_ids=ids).logits)


def test_recipe_defaults_parse_and_flags_override(tmp_path) -> None:
    args = parse_prior_args(
        ["--hidden_size", "64", "--num_attention_heads", "2"], _recipe_defaults()
    )
    assert args.recipe.model == "outputs/fuse_image_text/final" and args.recipe.threads == 1
    assert args.train.max_steps == 800 and args.train.output_dir == "outputs/train_prior"
    assert args.prior == PriorConfig(hidden_size=64, num_attention_heads=2)
    assert args.data.builtin_num_train == 2048
    config = tmp_path / "run.yaml"
    config.write_text("model: /some/model\nmax_steps: 5\nnum_hidden_layers: 2\n")
    args = parse_prior_args([str(config), "--max_steps", "7"])
    assert (args.recipe.model, args.train.max_steps, args.prior.num_hidden_layers) == (
        "/some/model",
        7,
        2,
    )
    with pytest.raises(ValueError, match="--model is required"):
        parse_prior_args([])
    # run identity's flags, as the tokenizer recipe's
    args = parse_prior_args(["--model", "m", "--overwrite_output_dir"])
    assert args.train.overwrite_output_dir is True
    assert parse_prior_args(["--model", "m"]).train.overwrite_output_dir is False


def test_recipe_trains_saves_and_pushes_beside_the_tokenizer_model(
    hub: HubServer, tmp_path, capsys
) -> None:
    model = tiny_model(seed=2).eval()
    model_dir = tmp_path / "vq"
    model.save_pretrained(str(model_dir))
    model.push_to_hub("org/shapes", token=TOKEN)
    out = tmp_path / "prior"
    argv = ["--model", str(model_dir), "--output_dir", str(out), *TINY_FLAGS]
    result = prior_recipe_main(
        [*argv, "--push_to_hub", "--hub_model_id", "org/shapes", "--hub_token", TOKEN]
    )
    assert result.metrics["steps"] == 3 and (out / "final" / "lm" / "model.safetensors").is_file()
    assert "mmvq prior training finished" in capsys.readouterr().out
    files = hub.files("org/shapes")
    assert {"config.json", "model.safetensors", "prior/prior_config.json"} <= set(files)
    assert "prior/lm/model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    text = files["prior/README.md"].decode("utf-8")  # the card as the Hub stored it
    assert f"| eval_loss | {cell(result.metrics['eval_loss'])} |" in text
    assert 'MultimodalPrior.from_pretrained("org/shapes", model=model)' in text

    # loaded back from the repo id (only prior/ downloaded), and from the local run
    vq = MultimodalVQ.from_pretrained("org/shapes", token=TOKEN, cache_dir=tmp_path / "c1")
    remote = MultimodalPrior.from_pretrained(
        "org/shapes", model=vq, token=TOKEN, cache_dir=tmp_path / "c2"
    )
    local = MultimodalPrior.from_pretrained(out / "final", model=model)
    assert _same_logits(remote, local) and remote.tokenizer.model is vq
    snapshot = next((tmp_path / "c2").glob("models--org--shapes/snapshots/*"))
    assert all(
        p.parts[0] == "prior" for p in (q.relative_to(snapshot) for q in snapshot.rglob("*"))
    )
    codes = remote.generate(2, modalities=["image"], decode=False).codes
    assert codes.codes[("image", "detail")].shape[0] == 2

    # re-pushing the tokenizer model keeps prior/; a second prior push replaces prior/ only
    model.push_to_hub("org/shapes", token=TOKEN)
    assert "prior/prior_config.json" in hub.files("org/shapes")
    hub_before = {k: v for k, v in hub.files("org/shapes").items() if not k.startswith("prior/")}
    remote.push_to_hub("org/shapes", token=TOKEN)
    after = hub.files("org/shapes")
    assert {k: v for k, v in after.items() if not k.startswith("prior/")} == hub_before


def test_a_repo_whose_prior_folder_has_code_is_refused(hub: HubServer, tmp_path) -> None:
    torch.manual_seed(0)
    spans = [SpanSpec("image", "detail", 4, 8)]
    config = PriorConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    MultimodalPrior.build(MultimodalTokenizer.from_spans(spans), config).push_to_hub(
        "org/evil_prior", token=TOKEN
    )
    code = CommitOperationAdd("prior/lm/modeling_evil.py", b"raise SystemExit('ran')\n")
    HfApi(token=TOKEN).create_commit("org/evil_prior", [code], commit_message="add code")
    cache = tmp_path / "cache"
    with pytest.raises(RemoteCodeError, match=r"carries code .*prior/lm/modeling_evil\.py"):
        MultimodalPrior.from_pretrained("org/evil_prior", token=TOKEN, cache_dir=cache)
    assert not list(cache.rglob("*.py"))  # refused from the listing: nothing was downloaded
    assert hub.unhandled == []


def test_recipe_script_reports_an_error_in_one_line(tmp_path) -> None:
    script = ROOT / "recipes" / "train_prior.py"
    cmd = [sys.executable, str(script), "--model", str(tmp_path / "nowhere"), *TINY_FLAGS]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("train_prior.py: error: ") and "nowhere" in last
