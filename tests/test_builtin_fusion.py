"""The three built-in adapters through one MultimodalVQ: the path the recipes take."""

import numpy as np
import PIL.Image
import pytest
import torch

from mmvq.fusion import FusionDecoderConfig
from mmvq.model import MultimodalVQ, MultimodalVQConfig
from mmvq.quantize import CodebookConfig
from mmvq_adapters.shapes import ShapeAttributes, caption, render_audio, render_image

SHAPES = [
    ShapeAttributes("red", "circle", "small", "top left"),
    ShapeAttributes("blue", "square", "large", "center"),
    ShapeAttributes("green", "triangle", "small", "bottom right"),
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MultimodalVQ.build(
        {
            "image": (
                "image",
                {
                    "resolution": 16,
                    "base_channels": 8,
                    "channel_mult": (1, 2),
                    "num_groups": 4,
                    "disc_num_layers": 1,
                },
            ),
            "text": ("text", {"max_length": 48, "d_model": 32, "num_layers": 1, "num_heads": 2}),
            "audio": (
                "audio",
                {
                    "base_channels": 8,
                    "num_groups": 4,
                    "channel_mult": (1, 2),
                    "max_seconds": 0.5,
                    "disc_num_layers": 1,
                },
            ),
        },
        MultimodalVQConfig(
            codebook=CodebookConfig(num_codes=64, code_dim=16),
            decoder=FusionDecoderConfig(dim=32, depth=1, heads=2),
            modality_dropout=0.5,
        ),
    )


def examples(with_audio=(True, False, True)):
    rows = []
    for attrs, audio in zip(SHAPES, with_audio):
        row = {"image": render_image(attrs, 16), "text": caption(attrs)}
        if audio:
            row["audio"] = {"array": render_audio(attrs, 8000, 0.5), "sampling_rate": 8000}
        rows.append(row)
    return rows


def test_train_step_with_a_row_missing_audio(model):
    model.train()
    batch = model.prepare(examples())
    assert batch["audio"]["present"].tolist() == [True, False, True]
    out = model(batch)
    assert set(out.recon) == {"image", "text", "audio"}
    assert float(out.rec_loss["audio"][1].detach()) == 0.0
    assert bool((out.codes["audio"][1] == -1).all())
    total = sum(out.rec_loss_mean.values()) + sum(out.vq_loss.values())
    assert torch.isfinite(total)
    model.zero_grad()
    total.backward()
    for m in ("image", "text", "audio"):
        grads = [p.grad for p in model.adapters[m].parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), m


def test_gan_inputs_match_their_discriminators(model):
    model.eval()
    batch = model.prepare(examples((True, True, True)))
    out = model(batch)
    for m in ("image", "audio"):
        disc = model.adapters[m].discriminator()
        real, fake = model.adapters[m].gan_inputs(batch[m], out.recon[m])
        assert disc(real).shape == disc(fake).shape
        assert model.adapters[m].last_layer().requires_grad
    assert model.adapters["text"].discriminator() is None


def test_translation_between_all_pairs_gives_raw_outputs(model):
    model.eval()
    batch = model.prepare(examples((True, True, True)))
    codes = model.encode(batch)
    assert codes.detail["image"].shape == (3, 64) and codes.detail["text"].shape == (3, 48)
    s = model.num_concepts
    assert all(codes.concept[m].shape == (3, s) for m in ("image", "text", "audio"))
    for source in ("image", "text", "audio"):
        outs = model.postprocess(
            model.decode(codes.select([source]), targets=["image", "text", "audio"])
        )
        assert all(isinstance(x, PIL.Image.Image) for x in outs["image"])
        assert all(isinstance(x, str) for x in outs["text"])
        assert all(isinstance(x, np.ndarray) and x.ndim == 1 for x in outs["audio"])


def test_save_and_load_round_trip_keeps_outputs(model, tmp_path):
    model.eval()
    model.save_pretrained(tmp_path / "m")
    loaded = MultimodalVQ.from_pretrained(tmp_path / "m")
    batch = model.prepare(examples((True, True, True)))
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    a, b = model.encode(batch), loaded.encode(batch)
    for level, codes in a.levels():
        assert codes and all(torch.equal(codes[m], getattr(b, level)[m]) for m in codes)
    ra = model.decode(a.select(["text"]), targets=["image"])["image"]
    rb = loaded.decode(b.select(["text"]), targets=["image"])["image"]
    assert torch.allclose(ra, rb)


def test_prepare_rejects_bad_examples(model):
    from mmvq.adapter import AdapterInputError

    with pytest.raises(AdapterInputError, match="does not know"):
        model.prepare([{"video": 1}])
    with pytest.raises(AdapterInputError, match="non-empty list"):
        model.prepare({"text": "x"})
    with pytest.raises(AdapterInputError):
        model.prepare([{"text": ""}])
