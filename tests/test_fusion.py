import pytest
import torch

from mmvq.fusion import FusionDecoder, FusionDecoderConfig

D = 8


def make(depth=1):
    torch.manual_seed(0)
    return FusionDecoder(
        FusionDecoderConfig(dim=16, depth=depth, heads=2), D, {"a": 3, "b": 4}
    ).eval()


def test_shapes_and_generation_of_absent_modality():
    dec = make()
    za = torch.randn(2, 3, D)
    vis = {"a": torch.ones(2, dtype=torch.bool)}
    mask = {"a": torch.ones(2, 3, dtype=torch.bool)}
    out = dec({"a": za}, vis, mask, targets=["a", "b"])
    assert out["a"].shape == (2, 3, D) and out["b"].shape == (2, 4, D)


def test_hidden_rows_become_mask_tokens():
    dec = make()
    za = torch.randn(2, 3, D)
    mask = {"a": torch.ones(2, 3, dtype=torch.bool)}
    hidden = {"a": torch.tensor([False, False])}
    out1 = dec({"a": za}, hidden, mask, targets=["b"])
    out2 = dec({"a": torch.randn(2, 3, D)}, hidden, mask, targets=["b"])
    assert torch.allclose(out1["b"], out2["b"]), "hidden codes must not leak"
    # ...and equal to generating with no input at all for that modality
    out3 = dec({}, {"a": hidden["a"]}, {}, targets=["a", "b"])
    assert torch.allclose(out1["b"], out3["b"], atol=1e-6)
    # visible codes do matter
    shown = dec({"a": za}, {"a": torch.tensor([True, True])}, mask, targets=["b"])
    assert not torch.allclose(shown["b"], out1["b"])


def test_padding_is_not_attended():
    dec = make(depth=2)
    za = torch.randn(1, 3, D)
    vis = {"a": torch.ones(1, dtype=torch.bool)}
    mask = {"a": torch.tensor([[True, True, False]])}
    out1 = dec({"a": za}, vis, mask, targets=["b"])
    za2 = za.clone()
    za2[0, 2] = 50.0
    out2 = dec({"a": za2}, vis, mask, targets=["b"])
    assert torch.allclose(out1["b"], out2["b"], atol=1e-5)


def test_config_and_layout_errors():
    with pytest.raises(ValueError, match="not divisible by heads"):
        FusionDecoderConfig(dim=10, heads=3)
    with pytest.raises(ValueError, match="depth"):
        FusionDecoderConfig(depth=0)
    dec = make()
    with pytest.raises(KeyError, match="not in its layout"):
        dec({"c": torch.randn(1, 3, D)}, {"c": torch.ones(1, dtype=torch.bool)}, {}, targets=["c"])
    with pytest.raises(ValueError, match="decoder layout expects 3"):
        dec(
            {"a": torch.randn(1, 5, D)},
            {"a": torch.ones(1, dtype=torch.bool)},
            {"a": torch.ones(1, 5, dtype=torch.bool)},
            targets=["a"],
        )
