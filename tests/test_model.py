import pytest
import torch
from toy_adapters import SeqAdapter, VecAdapter, toy_batch

from mmvq.adapter import AdapterInputError, Tokens
from mmvq.fusion import FusionDecoderConfig
from mmvq.model import MultimodalVQ, MultimodalVQConfig
from mmvq.quantize import CodebookConfig

D = 16


def make_model(**kw):
    torch.manual_seed(0)
    cfg = MultimodalVQConfig(
        codebook=CodebookConfig(num_codes=32, code_dim=D, kmeans_init=False),
        decoder=FusionDecoderConfig(dim=32, depth=2, heads=2),
        **kw,
    )
    return MultimodalVQ({"vec": VecAdapter(code_dim=D), "seq": SeqAdapter(code_dim=D)}, cfg)


def test_forward_shapes_losses_and_padding_codes():
    model = make_model()
    batch = toy_batch(model.adapters["vec"], model.adapters["seq"])
    out = model(batch)
    assert out.recon["vec"].shape == (4, 12)
    assert out.recon["seq"].shape == (4, 5, 11)
    assert out.codes["vec"].shape == (4, 3) and out.codes["seq"].shape == (4, 5)
    pad = ~batch["seq"]["mask"]
    assert bool((out.codes["seq"][pad] == -1).all()) and bool((out.codes["seq"][~pad] >= 0).all())
    for m in ("vec", "seq"):
        assert out.rec_loss[m].shape == (4,)
        assert torch.isfinite(out.rec_loss_mean[m]) and torch.isfinite(out.vq_loss[m])
    assert torch.isfinite(out.loss)
    assert any(k.startswith("usage/") for k in out.stats)


def test_gradient_reaches_both_encoders_through_straight_through():
    model = make_model()
    out = model(toy_batch(model.adapters["vec"], model.adapters["seq"]))
    out.loss.backward()
    assert model.adapters["vec"].enc.weight.grad.abs().sum() > 0
    assert model.adapters["seq"].emb.weight.grad.abs().sum() > 0
    assert model.decoder.mask_token["vec"].grad is None or True  # mask tokens may be unused here


def test_absent_rows_are_masked_out_of_codes_and_losses():
    model = make_model(modality_dropout=0.0)
    batch = toy_batch(model.adapters["vec"], model.adapters["seq"])
    batch["seq"]["present"] = torch.tensor([True, False, True, False])
    out = model(batch)
    assert bool((out.codes["seq"][1] == -1).all()) and bool((out.codes["seq"][3] == -1).all())
    assert float(out.rec_loss["seq"][1].detach()) == 0.0
    expected = out.rec_loss["seq"][[0, 2]].mean()
    assert torch.allclose(out.rec_loss_mean["seq"], expected)
    assert out.visible["seq"].tolist() == [True, False, True, False]


def test_modality_dropout_keeps_one_visible_and_only_in_training():
    model = make_model(modality_dropout=0.95)
    batch = toy_batch(model.adapters["vec"], model.adapters["seq"], n=64)
    model.train()
    out = model(batch)
    vis = torch.stack([out.visible["vec"], out.visible["seq"]], 1)
    assert bool(vis.any(1).all()), "every row keeps one visible modality"
    assert not bool(vis.all(1).all()), "with p=0.95 some rows must drop a modality"
    # Dropped modalities are still reconstructed (translation) and scored.
    assert out.rec_loss["vec"].shape == (64,)
    model.eval()
    out = model(batch)
    assert bool(out.visible["vec"].all() and out.visible["seq"].all())
    model.train()
    out = model(batch, modality_dropout=0.0)
    assert bool(out.visible["vec"].all() and out.visible["seq"].all())


def test_padding_content_does_not_leak():
    model = make_model(modality_dropout=0.0).eval()
    batch = toy_batch(model.adapters["vec"], model.adapters["seq"])
    ref = model(batch).recon["vec"]
    ids = batch["seq"]["ids"].clone()
    pad = ~batch["seq"]["mask"]
    ids[pad] = 7  # change only padded positions
    batch["seq"]["ids"] = ids
    assert torch.allclose(model(batch).recon["vec"], ref, atol=1e-5)


def test_encode_decode_matches_forward_and_translates():
    model = make_model().eval()
    batch = toy_batch(model.adapters["vec"], model.adapters["seq"])
    codes = model.encode(batch)
    out = model(batch)
    for m in ("vec", "seq"):
        assert torch.equal(codes.detail[m], out.codes[m])
        assert torch.equal(codes.concept[m], out.concept_codes[m])
    rec = model.decode(codes)
    assert torch.allclose(rec["vec"], out.recon["vec"], atol=1e-5)
    # Cross-modal: seq -> vec and vec -> seq, from one modality's codes only.
    from_seq = model.decode(codes.select(["seq"]), targets=["vec"])
    assert from_seq["vec"].shape == (4, 12)
    from_vec = model.translate({"vec": batch["vec"]}, targets=["seq"])
    assert from_vec["seq"].shape == (4, 5, 11)
    # Encoding does not touch codebook statistics, even in training mode.
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(batch)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bad_inputs_are_clear():
    with pytest.raises(ValueError, match="code_dim=8 but the codebook's code_dim is 16"):
        MultimodalVQ(
            {"vec": VecAdapter(code_dim=8)}, MultimodalVQConfig(codebook=CodebookConfig(code_dim=D))
        )
    with pytest.raises(ValueError, match="modality_dropout"):
        MultimodalVQConfig(modality_dropout=1.5)
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        make_model(modality_weights={"audio": 1.0})
    model = make_model()
    batch = toy_batch(model.adapters["vec"], model.adapters["seq"])
    with pytest.raises(AdapterInputError, match="does not know"):
        model({"audio": batch["vec"]})
    with pytest.raises(AdapterInputError, match="empty"):
        model({})
    short = {"vec": batch["vec"], "seq": {k: v[:2] for k, v in batch["seq"].items()}}
    with pytest.raises(AdapterInputError, match="disagree on the batch size"):
        model(short)
    allpad = {k: v.clone() for k, v in batch["seq"].items()}
    allpad["mask"][2] = False
    with pytest.raises(AdapterInputError, match="sample 2 of modality 'seq' is all padding"):
        model({"seq": allpad})
    with pytest.raises(ValueError, match="must be an integer tensor"):
        model.decode({"vec": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="outside"):
        model.decode({"vec": torch.full((2, 3), 99)})
    with pytest.raises(KeyError, match="unknown modality"):
        model.decode({"vec": torch.zeros(2, 3, dtype=torch.long)}, targets=["audio"])


def test_wrong_adapter_output_shape_is_caught_at_the_boundary():
    class Broken(VecAdapter):
        def encode(self, batch):
            z, m = super().encode(batch)
            return Tokens(z[:, :2], m[:, :2])

    model = MultimodalVQ(
        {"vec": Broken(code_dim=D)},
        MultimodalVQConfig(codebook=CodebookConfig(num_codes=8, code_dim=D, kmeans_init=False)),
    )
    batch = {
        "vec": model.adapters["vec"].collate([model.adapters["vec"].preprocess(torch.zeros(12))])
    }
    with pytest.raises(ValueError, match=r"expected \[batch=1, num_tokens=3, code_dim=16\]"):
        model(batch)


def test_build_resolves_registered_adapters():
    from mmvq.registry import register_adapter

    register_adapter("toy-vec-model-test", VecAdapter, exist_ok=True)
    model = MultimodalVQ.build(
        {"v": ("toy-vec-model-test", {"size": 8, "tokens": 2})},
        MultimodalVQConfig(codebook=CodebookConfig(num_codes=8, code_dim=D, kmeans_init=False)),
    )
    assert model.adapters["v"].config.code_dim == D and model.num_tokens() == {"v": 2}
