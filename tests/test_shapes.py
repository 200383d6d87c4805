"""Tests of mmvq_adapters.shapes: the built-in generated "shapes" dataset and its text->image
score."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import mmvq_adapters.shapes as S
from mmvq_adapters.shapes import (
    MAX_PSNR_DB,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeAttributes,
    all_attributes,
    caption,
    chance_accuracy,
    make_shapes_dataset,
    parse_caption,
    parse_pattern,
    predict_attributes,
    render_audio,
    render_image,
    render_mask,
    sample_attributes,
    shapes_text_to_image_scorer,
    text_to_image_score,
)

torch.set_num_threads(1)


# ------------------------------------------------------------------------- attributes
def test_attributes_validate_field_and_allowed_values():
    with pytest.raises(ValueError, match=r"colour must be one of .*'red'.*got 'pink'"):
        ShapeAttributes("pink", "circle", "small", "center")
    with pytest.raises(ValueError, match=r"position must be one of"):
        ShapeAttributes("red", "circle", "small", "middle")


def test_sample_attributes_deterministic_and_covers_every_value():
    a = [sample_attributes(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    seen = [sample_attributes(rng) for _ in range(400)]
    assert {s.colour for s in seen} == set(PALETTE)
    assert {s.shape for s in seen} == set(SHAPES)
    assert {s.size for s in seen} == set(SIZES)
    assert {s.position for s in seen} == set(POSITIONS)
    with pytest.raises(TypeError, match="numpy Generator"):
        sample_attributes(3)


def test_palette_is_well_separated():
    colours = np.array(list(PALETTE.values()), dtype=float)
    d = np.sqrt(((colours[:, None] - colours[None]) ** 2).sum(-1))
    assert d[~np.eye(len(colours), dtype=bool)].min() >= 120


# --------------------------------------------------------------------------- captions
def test_caption_round_trip_and_uniqueness():
    combos = all_attributes()
    assert len(combos) == 240
    captions = [caption(a) for a in combos]
    assert len(set(captions)) == 240
    for a, text in zip(combos, captions):
        assert parse_caption(text) == a
    assert caption(ShapeAttributes("red", "circle", "small", "top left")) == (
        "a small red circle at the top left"
    )
    assert caption(ShapeAttributes("blue", "square", "large", "center")) == (
        "a large blue square in the center"
    )


def test_parse_caption_tolerates_case_and_spacing_and_rejects_garbage():
    assert parse_caption("  A Small RED circle at the  top   left. ") == ShapeAttributes(
        "red", "circle", "small", "top left"
    )
    for bad in ["", "a red circle", "a small pink circle at the top left", "hello", 42, None]:
        assert parse_caption(bad) is None


# ----------------------------------------------------------------------------- images
def test_render_image_two_colours_and_geometry():
    a = ShapeAttributes("orange", "square", "large", "bottom right")
    img = render_image(a, 32)
    assert img.size == (32, 32) and img.mode == "RGB"
    colours = {c for _, c in img.getcolors()}
    assert colours == {S.BACKGROUND, PALETTE["orange"]}  # no anti-aliasing
    mask = render_mask(a, 32)
    ys, xs = np.nonzero(mask)
    assert xs.mean() > 16 and ys.mean() > 16  # bottom right quadrant
    small = render_mask(ShapeAttributes("orange", "square", "small", "bottom right"), 32)
    assert mask.sum() > 3 * small.sum()


def test_every_combination_renders_a_distinct_image():
    images = {render_image(a, 32).tobytes() for a in all_attributes()}
    assert len(images) == 240


def test_geometry_scales_with_resolution():
    for a in all_attributes()[::7]:
        low = render_mask(a, 32)
        high = render_mask(a, 64)
        up = np.kron(low, np.ones((2, 2), dtype=bool))
        iou = (up & high).sum() / (up | high).sum()
        assert iou > 0.8, (a, iou)


def test_render_image_rejects_tiny_resolution():
    with pytest.raises(ValueError, match="resolution must be an int >= 16"):
        render_image(ShapeAttributes("red", "circle", "small", "center"), 8)


# ------------------------------------------------------------------------------ audio
def _spectrum(wave: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    spec = np.abs(np.fft.rfft(wave))
    return np.fft.rfftfreq(len(wave), 1 / sr), spec


def _band(freqs, spec, f, width=8.0) -> float:
    return float(spec[(freqs > f - width) & (freqs < f + width)].max())


def test_audio_is_deterministic_and_distinct_per_combination():
    a = ShapeAttributes("cyan", "triangle", "large", "top right")
    w1, w2 = render_audio(a), render_audio(a)
    assert w1.dtype == np.float32 and w1.shape == (8000,)
    np.testing.assert_array_equal(w1, w2)
    assert np.abs(w1).max() <= 1.0
    waves = {render_audio(x, 8000, 0.5).tobytes() for x in all_attributes()}
    assert len(waves) == 240


def test_audio_pitch_encodes_colour():
    for colour, f0 in S.AUDIO_PITCH_HZ.items():
        w = render_audio(ShapeAttributes(colour, "circle", "large", "center"))
        freqs, spec = _spectrum(w, 8000)
        assert abs(freqs[np.argmax(spec)] - f0) < 3.0, colour


def test_audio_timbre_encodes_shape():
    f0 = S.AUDIO_PITCH_HZ["red"]
    ratios = {}
    for shape in SHAPES:
        w = render_audio(ShapeAttributes("red", shape, "large", "center"))
        freqs, spec = _spectrum(w, 8000)
        ratios[shape] = _band(freqs, spec, 3 * f0) / _band(freqs, spec, f0)
    assert ratios["circle"] < 0.02  # pure sine
    assert 0.25 < ratios["square"] < 0.4  # 1/3
    assert 0.07 < ratios["triangle"] < 0.15  # 1/9


def test_audio_duration_encodes_size_and_envelope_encodes_position():
    def sounding(w):
        idx = np.nonzero(np.abs(w) > 1e-4)[0]
        return (idx[-1] - idx[0]) / 8000

    small = render_audio(ShapeAttributes("red", "circle", "small", "center"))
    large = render_audio(ShapeAttributes("red", "circle", "large", "center"))
    assert abs(sounding(small) - 0.4) < 0.02 and abs(sounding(large) - 0.8) < 0.02

    def halves(position):
        w = render_audio(ShapeAttributes("red", "circle", "large", position))[400:6800]
        return np.abs(w[: len(w) // 2]).mean(), np.abs(w[len(w) // 2 :]).mean()

    first, second = halves("bottom left")
    assert first > 1.5 * second  # left: falling
    first, second = halves("bottom right")
    assert second > 1.5 * first  # right: rising

    def tremolo_hz(position):
        w = render_audio(ShapeAttributes("red", "circle", "large", position), seconds=2.0)
        env = np.abs(w[800 : 800 + 12800]).reshape(-1, 80).max(axis=1)  # 100 Hz envelope
        freqs, spec = _spectrum(env - env.mean(), 100)
        return freqs[1:][np.argmax(spec[1:])]

    assert abs(tremolo_hz("top left") - 8.0) < 0.5
    assert abs(tremolo_hz("bottom left") - 3.0) < 0.5


def test_render_audio_rejects_bad_arguments():
    a = ShapeAttributes("red", "circle", "small", "center")
    with pytest.raises(ValueError, match="sample_rate must be an int >= 8000"):
        render_audio(a, sample_rate=4000)
    with pytest.raises(ValueError, match="seconds must be a number"):
        render_audio(a, seconds=0)


# ---------------------------------------------------------------------------- dataset
def test_make_shapes_dataset_columns_and_determinism():
    import datasets

    dd = make_shapes_dataset(num_train=40, num_eval=12, seed=5, resolution=16)
    assert set(dd) == {"train", "validation"}
    assert len(dd["train"]) == 40 and len(dd["validation"]) == 12
    train = dd["train"]
    assert isinstance(train.features["image"], datasets.Image)
    assert set(train.column_names) == {"image", "text", "colour", "shape", "size", "position"}
    row = train[0]
    attrs = ShapeAttributes(row["colour"], row["shape"], row["size"], row["position"])
    assert row["text"] == caption(attrs)
    assert row["image"].size == (16, 16)
    np.testing.assert_array_equal(np.asarray(row["image"]), np.asarray(render_image(attrs, 16)))

    again = make_shapes_dataset(num_train=40, num_eval=12, seed=5, resolution=16)
    assert again["train"]["text"] == train["text"]
    assert again["validation"]["text"] == dd["validation"]["text"]
    other = make_shapes_dataset(num_train=40, num_eval=12, seed=6, resolution=16)
    assert other["train"]["text"] != train["text"]
    # the eval split is drawn from its own stream, not a prefix/copy of the train stream
    assert dd["validation"]["text"] != train["text"][:12]


def test_make_shapes_dataset_audio_is_wav_bytes_without_torchcodec():
    import datasets

    dd = make_shapes_dataset(num_train=6, num_eval=2, seed=1, with_audio=True, sample_rate=8000)
    feature = dd["train"].features["audio"]
    assert isinstance(feature, datasets.Audio) and feature.decode is False
    row = dd["train"][3]
    assert row["audio"]["path"] is None
    wave, sr = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
    attrs = ShapeAttributes(row["colour"], row["shape"], row["size"], row["position"])
    assert sr == 8000
    np.testing.assert_allclose(wave, render_audio(attrs, 8000), atol=1 / 16000)


def test_make_shapes_dataset_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_train must be an int >= 1"):
        make_shapes_dataset(num_train=0)
    with pytest.raises(ValueError, match="resolution must be an int >= 16"):
        make_shapes_dataset(num_train=2, resolution=4)


HOLDOUT = ["purple triangle", "large center"]


def test_holdout_keeps_combinations_out_of_train_and_validation():
    dd = make_shapes_dataset(
        num_train=300,
        num_eval=40,
        seed=2,
        resolution=16,
        holdout=HOLDOUT,
    )
    assert set(dd) == {"train", "validation", "unseen"}
    assert len(dd["unseen"]) == 40

    def held(row):
        return (row["colour"], row["shape"]) == ("purple", "triangle") or (
            row["size"],
            row["position"],
        ) == ("large", "center")

    assert not any(held(r) for r in dd["train"]) and not any(held(r) for r in dd["validation"])
    assert all(held(r) for r in dd["unseen"])
    # both patterns are drawn from, and the split is reproducible
    assert {r["shape"] for r in dd["unseen"] if r["size"] != "large"} == {"triangle"}
    assert any(r["size"] == "large" for r in dd["unseen"])
    again = make_shapes_dataset(
        num_train=300,
        num_eval=40,
        seed=2,
        resolution=16,
        holdout=HOLDOUT,
    )
    assert again["unseen"]["text"] == dd["unseen"]["text"]


def test_holdout_patterns_are_checked():
    assert parse_pattern("Large circle top left") == {
        "size": "large",
        "shape": "circle",
        "position": "top left",
    }
    with pytest.raises(ValueError, match="'blorp' is no attribute value"):
        make_shapes_dataset(num_train=2, holdout=["blorp triangle"])
    with pytest.raises(ValueError, match="names two colours"):
        parse_pattern("red blue circle")
    with pytest.raises(ValueError, match="covers every combination"):
        make_shapes_dataset(num_train=2, holdout=["circle", "square", "triangle"])


# ---------------------------------------------------------------------------- scoring
def test_true_renderings_score_one():
    combos = all_attributes()
    result = text_to_image_score([render_image(a, 32) for a in combos], combos)
    assert result["text_to_image_score"] == 1.0
    for key in (
        "colour_accuracy",
        "shape_accuracy",
        "size_accuracy",
        "position_accuracy",
        "mask_iou",
    ):
        assert result[key] == 1.0, key
    assert result["psnr"] == MAX_PSNR_DB


def test_attribute_recovery_is_exact_at_other_resolutions():
    for resolution in (16, 24, 64):
        for a in all_attributes()[::3]:
            assert predict_attributes(render_image(a, resolution)) == a


def test_mildly_noisy_renderings_keep_their_attributes():
    rng = np.random.default_rng(0)
    combos = all_attributes()[::4]
    images = []
    for a in combos:
        x = np.asarray(render_image(a, 32), dtype=np.float32) / 255
        x = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1)
        images.append(torch.from_numpy(x).permute(2, 0, 1).float())
    result = text_to_image_score(images, combos)
    assert result["text_to_image_score"] == 1.0
    assert 20 < result["psnr"] < 40


def test_wrong_attribute_renderings_score_lower():
    combos = all_attributes()
    colours = list(PALETTE)
    wrong = [
        ShapeAttributes(
            colours[(colours.index(a.colour) + 1) % len(colours)], a.shape, a.size, a.position
        )
        for a in combos
    ]
    result = text_to_image_score([render_image(w, 32) for w in wrong], combos)
    assert result["colour_accuracy"] == 0.0
    assert result["shape_accuracy"] == result["size_accuracy"] == result["position_accuracy"] == 1.0
    assert result["text_to_image_score"] == 0.75
    assert result["mask_iou"] == 1.0 and result["psnr"] < 20

    positions = list(POSITIONS)
    moved = [
        ShapeAttributes(a.colour, a.shape, a.size, positions[(positions.index(a.position) + 1) % 5])
        for a in combos
    ]
    result = text_to_image_score([render_image(m, 32) for m in moved], combos)
    assert result["position_accuracy"] == 0.0
    assert result["text_to_image_score"] < 0.8
    assert result["mask_iou"] < 0.3


def test_random_noise_scores_near_chance_and_blank_scores_zero():
    rng = np.random.default_rng(0)
    combos = all_attributes()
    noise = torch.from_numpy(rng.random((len(combos), 3, 32, 32), dtype=np.float32))
    result = text_to_image_score(noise, combos)
    chance = chance_accuracy()["text_to_image_score"]
    assert abs(result["text_to_image_score"] - chance) < 0.08, result
    assert result["text_to_image_score"] < 0.5
    blank = [Image.new("RGB", (32, 32))] * 4
    result = text_to_image_score(blank, combos[:4])
    assert result["text_to_image_score"] == 0.0 and result["mask_iou"] == 0.0


def test_tensor_and_pil_inputs_agree():
    combos = all_attributes()[:12]
    pil = [render_image(a, 32) for a in all_attributes()[100:112]]  # other attributes
    uint8 = [torch.from_numpy(np.array(p)).permute(2, 0, 1).contiguous() for p in pil]
    floats = torch.stack([u.float() / 255 for u in uint8])
    reference = text_to_image_score(pil, combos)
    assert 0.0 < reference["text_to_image_score"] < 1.0
    assert text_to_image_score(uint8, combos) == reference
    assert text_to_image_score(floats, combos) == reference


def test_score_rejects_bad_input():
    a = [ShapeAttributes("red", "circle", "small", "center")]
    img = render_image(a[0], 32)
    with pytest.raises(ValueError, match="2 images but 1 attribute sets"):
        text_to_image_score([img, img], a)
    with pytest.raises(ValueError, match=r"\[-1, 1\].*\(x \+ 1\) / 2"):
        text_to_image_score([torch.full((3, 32, 32), -0.5)], a)
    with pytest.raises(ValueError, match=r"must be \[3, H, W\]"):
        text_to_image_score([torch.zeros(32, 32, 3)], a)
    with pytest.raises(ValueError, match="must be square"):
        text_to_image_score([Image.new("RGB", (32, 16))], a)
    with pytest.raises(TypeError, match=r"attrs\[0\] must be a ShapeAttributes.*parse_caption"):
        text_to_image_score([img], ["a small red circle in the center"])
    with pytest.raises(TypeError, match=r"images\[0\] must be a PIL image"):
        text_to_image_score([np.zeros((32, 32, 3))], a)
    with pytest.raises(ValueError, match="at least one image"):
        text_to_image_score([], [])


def test_shapes_is_the_builtin_dataset_with_its_options_and_scorer():
    import datasets

    from mmvq_adapters.shapes import ShapesDataset, ShapesOptions

    dataset = ShapesDataset()
    options = dataset.options({"resolution": 16})
    assert options == ShapesOptions(resolution=16)
    dd = dataset.build(
        num_train=4, num_eval=2, seed=1, modalities=["image", "text"], options=options
    )
    assert dd["train"][0]["image"].size == (16, 16) and "audio" not in dd["train"].column_names
    # audio is made when a modality called "audio" is asked for, unless the option says otherwise
    dd = dataset.build(num_train=2, num_eval=0, seed=1, modalities=["audio"], options=options)
    assert isinstance(dd["train"].features["audio"], datasets.Audio)
    dd = dataset.build(
        num_train=2,
        num_eval=0,
        seed=1,
        modalities=["audio"],
        options=ShapesOptions(with_audio=False),
    )
    assert "audio" not in dd["train"].column_names
    assert dataset.translation_scorers({"image": "image", "text": "text"}) == {
        "text->image": shapes_text_to_image_scorer
    }
    assert dataset.translation_scorers({"image": "image", "text": "caption"}) == {}


def test_the_text_to_image_scorer_reads_captions():
    attrs = ShapeAttributes("red", "circle", "small", "top left")
    images = [render_image(attrs, 32), render_image(attrs, 32)]
    scores = shapes_text_to_image_scorer(images, [caption(attrs), "not a shapes caption"])
    assert scores["text_to_image_score"] == 1.0
    assert shapes_text_to_image_scorer(images[:1], ["nonsense"]) == {}
