"""The training GAN head (mmvq/training/gan.py) on the real image adapter's discriminator."""

from __future__ import annotations

import pytest
import torch
from train_helpers import tiny_model

from mmvq.training.gan import DiscriminatorSet, gan_inputs, generator_gan_loss


def _batch(n=3):
    torch.manual_seed(0)
    return {
        "image": {
            "pixel_values": torch.rand(n, 3, 16, 16) * 2 - 1,
            "present": torch.tensor([True, False, True]),
        },
        "text": {
            "input_ids": torch.randint(3, 100, (n, 48)),
            "attention_mask": torch.ones(n, 48, dtype=torch.long),
        },
    }


def test_one_discriminator_per_modality_that_has_one():
    discs = DiscriminatorSet.from_model(tiny_model())
    assert discs.modalities == ("image",)


def test_generator_loss_reaches_the_model_but_not_the_discriminator():
    model = tiny_model()
    discs = DiscriminatorSet.from_model(model)
    batch = _batch()
    out = model(batch)
    inputs = gan_inputs(model, discs, batch, out)
    real, fake = inputs["image"]
    assert real.shape[0] == fake.shape[0] == 2  # the row without an image is left out
    discs.requires_grad_(False)
    loss, log = generator_gan_loss(
        model,
        discs,
        inputs,
        out.rec_loss_mean,
        weight=0.5,
        kind="hinge",
        adaptive=True,
        max_weight=1e4,
    )
    loss.backward()
    assert all(p.grad is None for p in discs.parameters())
    assert model.adapters["image"].last_layer().grad.abs().sum() > 0
    assert float(log["gan/adaptive_weight/image"]) > 0
    assert float(loss.detach()) == pytest.approx(
        0.5 * float(log["gan/adaptive_weight/image"]) * float(log["gan/g_loss/image"]), rel=1e-5
    )


def test_discriminator_loss_and_the_zero_loss_of_a_process_without_inputs():
    model = tiny_model()
    discs = DiscriminatorSet.from_model(model)
    real = torch.rand(2, 3, 16, 16)
    loss, log = discs({"image": (real, torch.zeros_like(real))})
    loss.backward()
    assert float(loss.detach()) > 0 and "gan/d_loss/image" in log
    discs.zero_grad()
    empty, log = discs({})
    empty.backward()  # a rank whose batch had no image still joins the backward
    assert float(empty.detach()) == 0.0 and log == {}
    assert all(p.grad is not None and float(p.grad.abs().sum()) == 0.0 for p in discs.parameters())


def test_a_model_without_any_discriminator_has_no_gan_head():
    from mmvq.model import MultimodalVQ, MultimodalVQConfig

    text_only = MultimodalVQ.build(
        {"text": ("text", {"max_length": 8, "d_model": 16, "num_layers": 1, "num_heads": 2})},
        MultimodalVQConfig(
            codebook={"num_codes": 8, "code_dim": 8}, decoder={"dim": 16, "depth": 1, "heads": 2}
        ),
    )
    assert DiscriminatorSet.from_model(text_only) is None
    with pytest.raises(ValueError, match="at least one discriminator"):
        DiscriminatorSet({})
