"""Tests of the built-in image adapter (mmvq_adapters.image, image_utils, image_perceptual).

All images are drawn here with PIL (coloured shapes) or built as arrays; files go to tmp_path.
"""

from __future__ import annotations

import io
import math
import pickle
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from PIL import ImageDraw
from safetensors.torch import save_file

from mmvq.adapter import AdapterInputError, Tokens
from mmvq.nn.convnet import downsample_factor
from mmvq.nn.gan import PatchGANDiscriminator
from mmvq.testing import check_adapter
from mmvq_adapters.image import IMAGE_PRESETS, ImageAdapter, ImageAdapterConfig, save_image_grid
from mmvq_adapters.image_perceptual import VGGPerceptualLoss, vgg16_trunk
from mmvq_adapters.image_utils import load_image

torch.set_num_threads(1)

RED, GREEN, BLUE = (255, 0, 0), (0, 200, 0), (0, 0, 255)


def small_config(**overrides) -> ImageAdapterConfig:
    """cpu-small with 16 base channels: the fastest real configuration (32 px, f=4, 64 tokens)."""
    return ImageAdapterConfig.preset("cpu-small", base_channels=16, **overrides)


def shapes(size: int = 32) -> list[PIL.Image.Image]:
    """Four images of coloured shapes on coloured backgrounds."""
    specs = [
        (RED, BLUE, "ellipse"),
        (GREEN, (250, 250, 0), "rect"),
        ((255, 255, 255), (128, 0, 128), "triangle"),
        ((30, 30, 30), (0, 220, 220), "ellipse"),
    ]
    images = []
    for i, (bg, fg, kind) in enumerate(specs):
        img = PIL.Image.new("RGB", (size, size), bg)
        draw = ImageDraw.Draw(img)
        s = size / 32
        if kind == "ellipse":
            draw.ellipse([(4 + i) * s, 6 * s, (24 + i) * s, 26 * s], fill=fg)
        elif kind == "rect":
            draw.rectangle([5 * s, 8 * s, 22 * s, 28 * s], fill=fg)
        else:
            draw.polygon([(16 * s, 3 * s), (29 * s, 28 * s), (3 * s, 28 * s)], fill=fg)
        images.append(img)
    return images


@pytest.fixture(scope="module")
def adapter() -> ImageAdapter:
    torch.manual_seed(0)
    return ImageAdapter(small_config())


@pytest.fixture(scope="module")
def batch(adapter: ImageAdapter) -> dict[str, torch.Tensor]:
    return adapter.collate([adapter.preprocess(img) for img in shapes()])


# ------------------------------------------------------------------------ contract
def test_check_adapter_contract(tmp_path: Path) -> None:
    path = tmp_path / "shape.png"
    shapes(48)[2].save(path)
    examples = [
        shapes()[0],  # PIL
        str(path),  # file path, 48 px
        np.asarray(shapes(40)[1].resize((60, 40))),  # numpy HWC, non-square
        torch.rand(3, 36, 32),  # float CHW tensor
    ]
    report = check_adapter(ImageAdapter, examples, config=small_config())
    for name in (
        "config",
        "encode",
        "decode",
        "gradient",
        "last_layer",
        "gan",
        "state_dict",
        "bad_inputs",
    ):
        assert name in report.names, report
    assert not report.skipped


def test_entry_point_and_registry() -> None:
    (ep,) = [e for e in entry_points(group="mmvq.adapters") if e.name == "image"]
    assert ep.value == "mmvq_adapters.image:ImageAdapter"
    assert ep.load() is ImageAdapter
    from mmvq.registry import get_adapter

    assert get_adapter("image") is ImageAdapter


# -------------------------------------------------------------------------- config
def test_default_config_is_cpu_small() -> None:
    cfg = ImageAdapterConfig.preset("cpu-small")
    assert ImageAdapterConfig() == cfg
    assert (cfg.resolution, cfg.base_channels, cfg.channel_mult, cfg.num_res_blocks) == (
        32,
        32,
        (1, 2, 2),
        1,
    )
    assert not cfg.attn_at_lowest
    assert downsample_factor(cfg.convnet_config()) == 4
    assert ImageAdapter(cfg).num_tokens() == 64


def test_gpu_base_preset() -> None:
    cfg = ImageAdapterConfig.preset("gpu-base", code_dim=256)
    assert (cfg.resolution, cfg.base_channels, cfg.channel_mult, cfg.num_res_blocks) == (
        256,
        128,
        (1, 1, 2, 2, 4),
        2,
    )
    assert cfg.attn_at_lowest and cfg.code_dim == 256
    assert downsample_factor(cfg.convnet_config()) == 16
    assert (cfg.resolution // 16) ** 2 == 256  # tokens
    assert cfg.patchgan_config().num_layers == 3


def test_preset_errors() -> None:
    with pytest.raises(
        ValueError, match=r"unknown ImageAdapterConfig preset 'tiny'.*\['cpu-small', 'gpu-base'\]"
    ):
        ImageAdapterConfig.preset("tiny")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['resolutoin'\]"):
        ImageAdapterConfig.preset("cpu-small", resolutoin=64)
    assert set(IMAGE_PRESETS) == {"cpu-small", "gpu-base"}


@pytest.mark.parametrize(
    "overrides,match",
    [
        (
            dict(resolution=30),
            r"resolution must be a positive multiple of the downsampling factor 4",
        ),
        (dict(resolution=0), r"resolution"),
        (dict(loss="l3"), r"loss must be one of \('l1', 'l2'\), got 'l3'"),
        (dict(perceptual_weight=-1.0), r"perceptual_weight must be a float >= 0"),
        (dict(disc_norm="layer"), r"disc_norm must be one of"),
        (dict(disc_num_layers=0), r"disc_num_layers must be a positive int"),
        (dict(channel_mult=()), r"ImageAdapterConfig: ConvNetConfig.channel_mult"),
        (dict(code_dim=0), r"code_dim must be a positive int"),
    ],
)
def test_config_rejects_bad_fields(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_config(**overrides)


def test_config_json_round_trip_restores_tuples() -> None:
    cfg = ImageAdapterConfig.preset("gpu-base", random_crop=True)
    back = ImageAdapterConfig.from_dict(__import__("json").loads(cfg.to_json_string()))
    assert back == cfg and isinstance(back.channel_mult, tuple)


# ---------------------------------------------------------------------- preprocess
def _solid(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> PIL.Image.Image:
    return PIL.Image.new("RGB", size, colour)


def _expected(colour: tuple[int, int, int]) -> torch.Tensor:
    return (torch.tensor(colour, dtype=torch.float32) / 255 * 2 - 1).view(3, 1, 1).expand(3, 32, 32)


def test_preprocess_output_layout(adapter: ImageAdapter) -> None:
    out = adapter.preprocess(shapes()[0])
    assert set(out) == {"pixel_values"}
    x = out["pixel_values"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    torch.testing.assert_close(adapter.preprocess(_solid(RED))["pixel_values"], _expected(RED))


def test_every_accepted_input_kind_gives_the_same_pixels(
    adapter: ImageAdapter, tmp_path: Path
) -> None:
    img = shapes()[1]
    arr = np.array(img)  # [H, W, 3] uint8, writable
    path = tmp_path / "img.png"
    img.save(path)
    png = path.read_bytes()
    rgba = img.copy()
    rgba.putalpha(128)
    kinds = {
        "PIL": img,
        "PIL RGBA": rgba,
        "PIL P": img.convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=8),
        "str path": str(path),
        "Path": path,
        "bytes": png,
        "datasets dict bytes": {"bytes": png, "path": None},
        "datasets dict path": {"bytes": None, "path": str(path)},
        "numpy uint8 HWC": arr,
        "numpy RGBA": np.concatenate([arr, np.full(arr.shape[:2] + (1,), 7, np.uint8)], axis=-1),
        "numpy float": arr.astype(np.float32) / 255,
        "tensor uint8 CHW": torch.from_numpy(arr).permute(2, 0, 1),
        "tensor float CHW": torch.from_numpy(arr).permute(2, 0, 1).float() / 255,
    }
    ref = adapter.preprocess(img)["pixel_values"]
    for name, example in kinds.items():
        got = adapter.preprocess(example)["pixel_values"]
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize(
    "example",
    [
        PIL.Image.new("L", (32, 32), 128),
        np.full((32, 32), 128, np.uint8),
        np.full((32, 32, 1), 128, np.uint8),
        torch.full((1, 32, 32), 128, dtype=torch.uint8),
        torch.full((32, 32), 128 / 255),
    ],
    ids=["PIL L", "numpy HW", "numpy HW1", "tensor 1HW", "tensor HW float"],
)
def test_grayscale_becomes_rgb(adapter: ImageAdapter, example) -> None:
    x = adapter.preprocess(example)["pixel_values"]
    torch.testing.assert_close(x, torch.full((3, 32, 32), 128 / 255 * 2 - 1))


def _halves(width: int, height: int) -> PIL.Image.Image:
    """Left half red, right half blue."""
    img = _solid(RED, (width, height))
    draw = ImageDraw.Draw(img)
    draw.rectangle([width // 2, 0, width, height], fill=BLUE)
    return img


@pytest.mark.parametrize("size", [(64, 32), (128, 64), (96, 48)])
def test_resize_shorter_side_then_center_crop(adapter: ImageAdapter, size: tuple[int, int]) -> None:
    x = adapter.preprocess(_halves(*size))["pixel_values"]
    # The shorter side (height) becomes 32; the central 32 of the 64 columns are kept:
    # 16 red then 16 blue, with at most one blended column at the boundary (bicubic).
    torch.testing.assert_close(x[:, :, :15], _expected(RED)[:, :, :15], atol=0.02, rtol=0)
    torch.testing.assert_close(x[:, :, 17:], _expected(BLUE)[:, :, 17:], atol=0.02, rtol=0)


def test_upscales_small_images(adapter: ImageAdapter) -> None:
    x = adapter.preprocess(_solid(GREEN, (8, 8)))["pixel_values"]
    torch.testing.assert_close(x, _expected(GREEN), atol=1e-5, rtol=0)


def test_random_crop_varies_and_stays_inside_the_image() -> None:
    a = ImageAdapter(small_config(random_crop=True))
    ramp = np.tile(np.arange(96, dtype=np.uint8)[None, :, None] * 2, (32, 1, 3))  # [32, 96, 3]
    torch.manual_seed(0)
    crops = [a.preprocess(ramp)["pixel_values"] for _ in range(8)]
    starts = {int(round((c[0, 0, 0].item() + 1) / 2 * 255 / 2)) for c in crops}
    assert len(starts) > 1  # different windows
    full = torch.from_numpy(ramp).permute(2, 0, 1).float() / 255 * 2 - 1
    for crop, s in zip(crops, [int(round((c[0, 0, 0].item() + 1) / 2 * 255 / 2)) for c in crops]):
        torch.testing.assert_close(crop, full[:, :, s : s + 32], atol=1e-5, rtol=0)
    center = ImageAdapter(small_config()).preprocess(ramp)["pixel_values"]
    torch.testing.assert_close(center, full[:, :, 32:64], atol=1e-5, rtol=0)


def test_adapter_pickles_for_dataloader_workers(adapter: ImageAdapter) -> None:
    clone = pickle.loads(pickle.dumps(adapter))
    img = shapes()[3]
    torch.testing.assert_close(clone.preprocess(img), adapter.preprocess(img))


# ---------------------------------------------------------------------- bad inputs
@pytest.fixture()
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not an image at all\n")
    return path


BAD = [
    (
        "5-channel array",
        lambda p: np.zeros((32, 32, 5), np.uint8),
        r"got 5 channels in a numpy array \[H, W, C\] of shape \(32, 32, 5\); "
        r"pass an image with 1, 3 or 4 channels",
    ),
    (
        "5-channel tensor",
        lambda p: torch.zeros(5, 32, 32),
        r"got 5 channels in a tensor \[C, H, W\] of shape \(5, 32, 32\)",
    ),
    (
        "1-D array",
        lambda p: np.zeros(32, np.uint8),
        r"numpy array has rank 1 \(shape \(32,\)\); pass one image as \[H, W\] or \[H, W, C\]",
    ),
    ("1-D tensor", lambda p: torch.zeros(32), r"tensor has rank 1 \(shape \(32,\)\)"),
    (
        "4-D tensor",
        lambda p: torch.zeros(1, 3, 32, 32),
        r"tensor has rank 4 \(shape \(1, 3, 32, 32\)\); pass one image as \[C, H, W\]"
        r".*each image separately",
    ),
    ("4-D array", lambda p: np.zeros((1, 32, 32, 3), np.uint8), r"numpy array has rank 4"),
    (
        "smaller than factor",
        lambda p: np.zeros((3, 3, 3), np.uint8),
        r"size 3x3 is smaller than the downsampling factor 4.*at least 4x4 px",
    ),
    (
        "thin image",
        lambda p: PIL.Image.new("RGB", (64, 2)),
        r"size 2x64 is smaller than the downsampling factor 4",
    ),
    (
        "text file",
        lambda p: str(p),
        r"file '.*notes\.txt' is not an image PIL can read.*PNG or JPEG",
    ),
    ("text file as Path", lambda p: p, r"notes\.txt' is not an image"),
    (
        "missing path",
        lambda p: str(p.parent / "nope.png"),
        r"path '.*nope\.png' does not exist; pass an existing image file",
    ),
    ("directory", lambda p: p.parent, r"is not a file"),
    ("int", lambda p: 42, r"unsupported type int \(42\); pass a PIL image, a file path"),
    ("list", lambda p: [[0, 1], [2, 3]], r"unsupported type list"),
    ("None", lambda p: None, r"unsupported type NoneType"),
    (
        "channels-first numpy",
        lambda p: np.zeros((3, 32, 32), np.uint8),
        r"looks channels-first.*transpose\(1, 2, 0\)",
    ),
    (
        "channels-last tensor",
        lambda p: torch.zeros(32, 32, 3),
        r"looks channels-last.*permute\(2, 0, 1\)",
    ),
    (
        "float 0..255 tensor",
        lambda p: torch.full((3, 32, 32), 200.0),
        r"float tensor values must lie in \[0, 1\], got min 200 and max 200; "
        r"scale 0..255 data with x / 255",
    ),
    (
        "float -1..1 array",
        lambda p: np.full((32, 32, 3), -1.0, np.float32),
        r"\[-1, 1\] data with \(x \+ 1\) / 2",
    ),
    ("NaN tensor", lambda p: torch.full((3, 32, 32), float("nan")), r"NaN or inf"),
    (
        "int64 tensor",
        lambda p: torch.zeros(3, 32, 32, dtype=torch.int64),
        r"dtype torch.int64 is not supported; pass uint8",
    ),
    ("bool array", lambda p: np.zeros((32, 32, 3), bool), r"dtype bool is not supported"),
    ("bytes", lambda p: b"hello", r"5 bytes is not an image"),
    (
        "empty dict",
        lambda p: {"text": "a cat"},
        r"dict with keys \['text'\] holds no 'bytes' or 'path'",
    ),
]


@pytest.mark.parametrize("make,match", [(m, r) for _, m, r in BAD], ids=[n for n, _, _ in BAD])
def test_bad_input_is_rejected_clearly(
    adapter: ImageAdapter, text_file: Path, make, match: str
) -> None:
    with pytest.raises(AdapterInputError, match=r"^image: .*" + match):
        adapter.preprocess(make(text_file))


def test_declared_bad_inputs_cover_the_required_cases(adapter: ImageAdapter) -> None:
    declared = adapter.bad_inputs()
    text = " | ".join(b.description for b in declared)
    for needed in (
        "5-channel numpy array",
        "5-channel tensor",
        "1-D",
        "4-D",
        "smaller than the downsampling factor",
        "text file",
        "missing file",
        "unsupported type",
    ):
        assert needed in text, needed
    for bad in declared:
        with pytest.raises(bad.error) as info:
            adapter.preprocess(bad.example)
        assert bad.match.lower() in str(info.value).lower(), bad.description


# ---------------------------------------------------------------- encode / decode
def test_encode_tokens_are_the_row_major_grid(adapter: ImageAdapter, batch) -> None:
    adapter.eval()
    with torch.no_grad():
        tokens = adapter.encode(batch)
        grid = adapter.encoder(batch["pixel_values"])
    assert isinstance(tokens, Tokens)
    assert tokens.z.shape == (4, 64, adapter.config.code_dim)
    assert tokens.mask.dtype == torch.bool and tokens.mask.all() and tokens.mask.shape == (4, 64)
    for i, j in [(0, 0), (0, 7), (3, 5), (7, 7)]:
        torch.testing.assert_close(tokens.z[:, i * 8 + j], grid[:, :, i, j])


def test_decode_shape_and_translation_mode(adapter: ImageAdapter, batch) -> None:
    h = torch.randn(2, 64, adapter.config.code_dim)
    assert adapter.decode(h, None).shape == (2, 3, 32, 32)
    with pytest.raises(
        AdapterInputError, match=r"decode expects h of shape \[B, 64, 64\].*got \(2, 63, 64\)"
    ):
        adapter.decode(torch.randn(2, 63, 64))
    with pytest.raises(AdapterInputError, match=r"got \(2, 64, 32\)"):
        adapter.decode(torch.randn(2, 64, 32))


@pytest.mark.parametrize(
    "bad_batch,match",
    [
        (
            {"pixels": torch.zeros(1, 3, 32, 32)},
            r"batch\['pixel_values'\] must be a float tensor \[B, 3, 32, 32\], got \['pixels'\]",
        ),
        (
            {"pixel_values": torch.zeros(1, 3, 64, 64)},
            r"got \(1, 3, 64, 64\); build batches with adapter.collate",
        ),
        ({"pixel_values": torch.zeros(3, 32, 32)}, r"got \(3, 32, 32\)"),
    ],
)
def test_encode_rejects_bad_batches(adapter: ImageAdapter, bad_batch, match: str) -> None:
    with pytest.raises(AdapterInputError, match=match):
        adapter.encode(bad_batch)


# ---------------------------------------------------------------------- loss/metrics
def test_reconstruction_loss_l1_and_l2(batch) -> None:
    x = batch["pixel_values"]
    recon = x + torch.linspace(-0.5, 0.5, 4).view(4, 1, 1, 1) * torch.randn_like(x)
    l1 = ImageAdapter(small_config()).reconstruction_loss(batch, recon)
    l2 = ImageAdapter(small_config(loss="l2")).reconstruction_loss(batch, recon)
    assert l1.shape == l2.shape == (4,)
    torch.testing.assert_close(l1, torch.stack([(r - t).abs().mean() for r, t in zip(recon, x)]))
    torch.testing.assert_close(l2, torch.stack([((r - t) ** 2).mean() for r, t in zip(recon, x)]))
    assert ImageAdapter(small_config()).reconstruction_loss(batch, x).abs().max() == 0


def test_reconstruction_loss_rejects_wrong_shape(adapter: ImageAdapter, batch) -> None:
    with pytest.raises(
        AdapterInputError,
        match=r"reconstruction has shape \(4, 3, 16, 16\) but pixel_values has \(4, 3, 32, 32\)",
    ):
        adapter.reconstruction_loss(batch, torch.zeros(4, 3, 16, 16))


def test_metrics_psnr_ssim(adapter: ImageAdapter, batch) -> None:
    x = batch["pixel_values"]
    torch.manual_seed(0)
    recon = x + 0.1 * torch.randn_like(x)
    m = adapter.metrics(batch, recon)
    assert set(m) == {"psnr", "ssim"} and all(isinstance(v, float) for v in m.values())
    target, pred = (x + 1) / 2, ((recon + 1) / 2).clamp(0, 1)
    psnr = np.mean(
        [10 * math.log10(1 / ((p - t) ** 2).mean().item()) for p, t in zip(pred, target)]
    )
    assert m["psnr"] == pytest.approx(psnr, rel=1e-4)
    assert 0.0 < m["ssim"] < 0.99
    perfect = adapter.metrics(batch, x)
    assert perfect["ssim"] == pytest.approx(1.0, abs=1e-3)
    assert perfect["psnr"] > m["psnr"] + 20


def test_metrics_use_present_rows_only(adapter: ImageAdapter, batch) -> None:
    x = batch["pixel_values"]
    recon = x.clone()
    recon[1:] += 0.2 * torch.randn_like(recon[1:])
    present = torch.tensor([False, True, True, False])
    got = adapter.metrics({**batch, "present": present}, recon)
    want = adapter.metrics({"pixel_values": x[1:3]}, recon[1:3])
    assert got == pytest.approx(want)
    assert adapter.metrics({**batch, "present": torch.zeros(4, dtype=torch.bool)}, recon) == {}


def test_postprocess_round_trip(adapter: ImageAdapter, batch) -> None:
    images = adapter.postprocess(batch["pixel_values"])
    assert len(images) == 4 and all(isinstance(i, PIL.Image.Image) for i in images)
    assert all(i.size == (32, 32) and i.mode == "RGB" for i in images)
    back = adapter.collate([adapter.preprocess(i) for i in images])["pixel_values"]
    torch.testing.assert_close(back, batch["pixel_values"], atol=1 / 255 + 1e-6, rtol=0)
    # Out-of-range reconstructions are clipped, not wrapped.
    (white,) = adapter.postprocess(torch.full((1, 3, 32, 32), 3.0))
    assert white.getpixel((0, 0)) == (255, 255, 255)


# ------------------------------------------------------------------------- GAN head
def test_gan_head(batch) -> None:
    a = ImageAdapter(small_config(disc_base_channels=8, disc_num_layers=2, disc_norm="group"))
    d1, d2 = a.discriminator(), a.discriminator()
    assert isinstance(d1, PatchGANDiscriminator) and d1 is not d2
    assert (d1.config.base_channels, d1.config.num_layers, d1.config.norm) == (8, 2, "group")
    recon = a.decode(a.encode(batch).z, batch)
    real, fake = a.gan_inputs(batch, recon)
    assert real is batch["pixel_values"] or torch.equal(real, batch["pixel_values"])
    assert fake is recon
    assert d1(fake).shape == (4, 1, 6, 6)
    assert a.last_layer() is a.decoder.conv_out.weight


def test_discriminator_too_deep_for_resolution() -> None:
    a = ImageAdapter(small_config(resolution=16, disc_num_layers=3))
    with pytest.raises(
        ValueError, match=r"disc_num_layers=3 needs images of at least 24 px but resolution=16"
    ):
        a.discriminator()


# ----------------------------------------------------------------- perceptual loss
def test_perceptual_without_weights_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError,
        match=r"perceptual_weight=0.5 needs local VGG16 weights.*no perceptual_weights_path"
        r".*downloads nothing.*perceptual_weights_path=",
    ):
        ImageAdapter(small_config(perceptual_weight=0.5))
    missing = str(tmp_path / "vgg16.pth")
    with pytest.raises(
        FileNotFoundError,
        match=r"'.*vgg16\.pth' does not exist.*downloads nothing.*perceptual_weight=0\.0",
    ):
        ImageAdapter(small_config(perceptual_weight=0.5, perceptual_weights_path=missing))


def _random_vgg_state(with_lin: bool = False, prefix: str = "features.") -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = {}
    for key, value in vgg16_trunk("meta").state_dict().items():
        fan_in = value[0].numel() if value.dim() > 1 else 1
        std = math.sqrt(2.0 / fan_in) if value.dim() > 1 else 0.0
        state[prefix + key] = torch.randn(value.shape) * std
    if with_lin:
        for i, c in enumerate((64, 128, 256, 512, 512)):
            state[f"lin{i}.model.1.weight"] = torch.zeros(1, c, 1, 1)
    return state


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth-features-only"])
def test_perceptual_loss_from_local_file(tmp_path: Path, batch, fmt: str) -> None:
    if fmt == "safetensors":
        path = tmp_path / "vgg.safetensors"
        save_file(_random_vgg_state(), str(path))
    else:
        path = tmp_path / "vgg.pth"
        torch.save(
            _random_vgg_state(prefix="" if fmt == "pth-features-only" else "features."), path
        )
    plain = ImageAdapter(small_config())
    perc = ImageAdapter(small_config(perceptual_weight=1.0, perceptual_weights_path=str(path)))
    perc.load_state_dict(plain.state_dict())
    # The frozen VGG is not part of the adapter's weights or trainable parameters.
    assert perc.state_dict().keys() == plain.state_dict().keys()
    assert sum(p.numel() for p in perc.parameters()) == sum(p.numel() for p in plain.parameters())
    x = batch["pixel_values"][:2]
    b = {"pixel_values": x}
    torch.manual_seed(1)
    recon = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    loss_plain, loss_perc = plain.reconstruction_loss(b, recon), perc.reconstruction_loss(b, recon)
    assert loss_perc.shape == (2,)
    vgg = VGGPerceptualLoss(path)
    torch.testing.assert_close(loss_perc, loss_plain + vgg(recon, x))
    assert (loss_perc > loss_plain).all()
    loss_perc.sum().backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    torch.testing.assert_close(vgg(x, x), torch.zeros(2))


def test_perceptual_lin_weights_are_used(tmp_path: Path) -> None:
    path = tmp_path / "vgg_lpips.safetensors"
    save_file(_random_vgg_state(with_lin=True), str(path))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert VGGPerceptualLoss(path)(x, -x).abs().max() == 0  # all-zero lin layers


def test_perceptual_rejects_a_non_vgg_file(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    with pytest.raises(
        ValueError, match=r"'.*other\.safetensors' is not a torchvision VGG16 state dict"
    ):
        ImageAdapter(small_config(perceptual_weight=1.0, perceptual_weights_path=str(path)))


# --------------------------------------------------------------------- image grid
def test_save_image_grid(tmp_path: Path, adapter: ImageAdapter, batch) -> None:
    originals = shapes()
    recon = batch["pixel_values"]  # [-1, 1] tensors, as the model produces
    translations = [_solid(GREEN, (16, 16))]  # a shorter row, and a different size
    out = save_image_grid([originals, recon, translations], tmp_path / "grids" / "step_1.png")
    assert out.exists()
    grid = PIL.Image.open(out).convert("RGB")
    pad, side = 2, 32
    assert grid.size == (4 * (side + pad) + pad, 3 * (side + pad) + pad)

    def cell(row: int, col: int, x: int = 1, y: int = 1) -> tuple[int, int, int]:
        return grid.getpixel((pad + col * (side + pad) + x, pad + row * (side + pad) + y))

    assert cell(0, 0) == RED and cell(1, 0) == RED  # original and tensor row agree
    assert cell(0, 1) == GREEN and cell(1, 1) == GREEN
    assert cell(2, 0, 16, 16) == GREEN  # resized to the common size
    assert cell(2, 1, 16, 16) == (255, 255, 255)  # blank filler


def test_save_image_grid_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="got no rows"):
        save_image_grid([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="only empty rows"):
        save_image_grid([[]], tmp_path / "a.png")
    with pytest.raises(
        TypeError, match=r"row 0 cell 1 is ndarray.*PIL image or a tensor \[3, H, W\]"
    ):
        save_image_grid([[_solid(RED), np.zeros((4, 4, 3))]], tmp_path / "a.png")


def test_load_image_of_a_png_file_matches_pil(tmp_path: Path) -> None:
    img = shapes()[2]
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    torch.testing.assert_close(
        load_image(buf.getvalue()), torch.from_numpy(np.array(img)).permute(2, 0, 1)
    )


# ------------------------------------------------------------------------- overfit
PSNR_THRESHOLD = 22.0  # dB on [0, 1] images


def test_overfits_four_shapes_through_encode_decode() -> None:
    """4 shape images at 32 px, encode -> decode directly (no codebook), Adam: PSNR > 22 dB.

    Typically crosses 22 dB after ~120-140 steps (about 4 s on one free CPU core).
    """
    torch.manual_seed(0)
    a = ImageAdapter(small_config())
    batch = a.collate([a.preprocess(img) for img in shapes()])
    opt = torch.optim.Adam(a.parameters(), lr=3e-3)
    psnr = 0.0
    for step in range(300):
        recon = a.decode(a.encode(batch).z, batch)
        loss = a.reconstruction_loss(batch, recon).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            a.eval()
            with torch.no_grad():
                psnr = a.metrics(batch, a.decode(a.encode(batch).z, batch))["psnr"]
            a.train()
            if psnr > PSNR_THRESHOLD:
                break
    print(f"overfit: PSNR {psnr:.2f} dB after {step + 1} steps")
    assert psnr > PSNR_THRESHOLD, f"PSNR {psnr:.2f} dB after {step + 1} steps"


def test_files_honour_exif_orientation(tmp_path: Path) -> None:
    img = _halves(40, 20)  # landscape: red left, blue right
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.png"
    img.save(path, exif=exif)
    x = load_image(path)
    assert x.shape == (3, 40, 20)  # portrait after applying the tag
    assert tuple(x[:, 0, 10].tolist()) == RED and tuple(x[:, -1, 10].tolist()) == BLUE
