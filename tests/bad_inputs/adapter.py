"""Raw inputs the built-in adapters refuse (audio, image, text), and plugin adapters that break
the contract."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import soundfile as sf
import torch

from bad_inputs.helpers import (
    AdapterContractError,
    AdapterInputError,
    Tokens,
    VecAdapter,
    audio,
    case,
    image,
    png_claiming,
    text,
    tone,
    vec_batch,
    vec_model,
)


# ---------------------------------------------------------------------------------- audio
@case("adapter", AdapterInputError, r"'sampling_rate' = 1 Hz is outside the supported range")
def audio_sampling_rate_one(ctx):
    audio({"array": tone(), "sampling_rate": 1})


@case("adapter", AdapterInputError, r"'sampling_rate' = 1000000000 Hz is outside")
def audio_sampling_rate_a_gigahertz(ctx):
    audio((tone(), 10**9))


@case("adapter", AdapterInputError, r"'sampling_rate' must be a whole number of Hz, got 44100\.5")
def audio_fractional_sampling_rate(ctx):
    audio({"array": tone(), "sampling_rate": 44100.5})


@case("adapter", AdapterInputError, r"'array' has samples up to 500 .* must lie in \[-1, 1\]")
def audio_float_samples_times_1000(ctx):
    audio({"array": tone() * 1000, "sampling_rate": 8000})


@case("adapter", AdapterInputError, r"'array' contains 1 NaN/Inf sample")
def audio_nan_sample(ctx):
    clip = tone()
    clip[7] = np.nan
    audio({"array": clip, "sampling_rate": 8000})


@case("adapter", AdapterInputError, r"'array' is empty")
def audio_empty(ctx):
    audio({"array": np.zeros(0, np.float32), "sampling_rate": 8000})


@case("adapter", AdapterInputError, r"more than 2 channels")
def audio_three_channels(ctx):
    audio((np.zeros((3, 800), np.float32), 8000))


@case("adapter", AdapterInputError, r"has 'array' but no 'sampling_rate'")
def audio_without_sampling_rate(ctx):
    audio({"array": tone()})


@case("adapter", AdapterInputError, r"'bytes' \(64 bytes\) could not be decoded")
def audio_corrupt_bytes(ctx):
    audio({"path": None, "bytes": b"\x13\x37" * 32})


@case("adapter", AdapterInputError, r"sampling_rate' = 1000 Hz is outside")
def audio_file_at_1000_hz(ctx):
    path = ctx.tmp / "slow.wav"
    sf.write(path, np.zeros(1000, np.float32), 1000)
    audio(str(path))


# ---------------------------------------------------------------------------------- image
@case("adapter", AdapterInputError, r"57 bytes claims 900000000 pixels, more than the 67108864 p")
def image_decompression_bomb_png(ctx):
    image(png_claiming(30000, 30000))


@case("adapter", AdapterInputError, r"file '.*bomb\.png' is 12000x9000 = 108000000 pixels")
def image_bomb_file(ctx):
    path = ctx.tmp / "bomb.png"
    path.write_bytes(png_claiming(12000, 9000))
    image(str(path))


@case("adapter", AdapterInputError, r"numpy array of shape \(9000, 9000, 3\) is 9000x9000")
def image_oversized_array(ctx):
    image(np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (9000, 9000, 3)))


@case("adapter", AdapterInputError, r"PIL image is 9000x8000 = 72000000 pixels")
def image_oversized_pil(ctx):
    image(PIL.Image.new("1", (9000, 8000)))


@case("adapter", AdapterInputError, r"image: 10 bytes is not an image PIL can read")
def image_corrupt_bytes(ctx):
    image(b"plain text")


@case("adapter", AdapterInputError, r"image: expected 1 \(gray\), 3 \(RGB\) or 4 \(RGBA\)")
def image_five_channels(ctx):
    image(np.zeros((8, 8, 5), np.uint8))


@case("adapter", AdapterInputError, r"float tensor values must lie in \[0, 1\], got .* max 255")
def image_float_pixels_0_255(ctx):
    image(torch.full((3, 8, 8), 255.0))


@case("adapter", AdapterInputError, r"image: size 3x8 is smaller than the downsampling factor")
def image_smaller_than_the_factor(ctx):
    image(np.zeros((3, 8, 3), np.uint8))


@case("adapter", AdapterInputError, r"image: path '/nonexistent/x\.png' does not exist")
def image_missing_file(ctx):
    image("/nonexistent/x.png")


# ----------------------------------------------------------------------------------- text
@case("adapter", AdapterInputError, r"text holds a lone surrogate '\\ud800' \(U\+D800\)")
def text_lone_surrogate(ctx):
    text("a red \ud800 circle")


@case("adapter", AdapterInputError, r"text is empty")
def text_empty(ctx):
    text("   ")


@case("adapter", AdapterInputError, r"text must be a str, got 42")
def text_not_a_string(ctx):
    text(42)


@case("adapter", AdapterInputError, r"max_length")
def text_too_long(ctx):
    text("x" * 40)


# --------------------------------------------------------------------- plugin contracts
class _NegativeTokens(VecAdapter):
    def num_tokens(self):
        return -1


class _NoConfig(VecAdapter):
    def __init__(self):
        torch.nn.Module.__init__(self)


class _EncodeTensor(VecAdapter):
    def encode(self, batch):
        return super().encode(batch).z


class _MaskNone(VecAdapter):
    def encode(self, batch):
        return Tokens(super().encode(batch).z, None)


class _LossNone(VecAdapter):
    def reconstruction_loss(self, batch, recon):
        return None


class _PreprocessNone(VecAdapter):
    def preprocess(self, example):
        return None


class _EncodeNaN(VecAdapter):
    def encode(self, batch):
        tokens = super().encode(batch)
        return Tokens(tokens.z * float("nan"), tokens.mask)


@case("adapter", AdapterContractError, r"adapter 'v' \(_NegativeTokens\)\.num_tokens\(\) returned")
def plugin_negative_num_tokens(ctx):
    vec_model(_NegativeTokens(code_dim=8))


@case("adapter", AdapterContractError, r"adapter 'v' \(_NoConfig\) has no AdapterConfig")
def plugin_without_super_init(ctx):
    vec_model(_NoConfig())


@case("adapter", AdapterContractError, r"\(_EncodeTensor\)\.encode must return mmvq\.Tokens")
def plugin_encode_returns_a_tensor(ctx):
    model = vec_model(_EncodeTensor(code_dim=8))
    model(vec_batch(model))


@case("adapter", AdapterContractError, r"\(_MaskNone\)\.encode returned mask as NoneType")
def plugin_encode_without_mask(ctx):
    model = vec_model(_MaskNone(code_dim=8))
    model.encode(vec_batch(model))


@case("adapter", AdapterContractError, r"\(_LossNone\)\.reconstruction_loss returned NoneType")
def plugin_loss_none(ctx):
    model = vec_model(_LossNone(code_dim=8))
    model(vec_batch(model))


@case("adapter", AdapterContractError, r"\(_PreprocessNone\)\.preprocess returned NoneType")
def plugin_preprocess_none(ctx):
    model = vec_model(_PreprocessNone(code_dim=8))
    model.prepare([{"v": [0.1] * 12}])


@case("adapter", AdapterInputError, r"z\['v'\] holds 48 non-finite value\(s\)")
def plugin_nan_tokens_in_a_plain_training_forward(ctx):
    model = vec_model(_EncodeNaN(code_dim=8)).train()
    model(vec_batch(model))


@case("adapter", AdapterInputError, r"audio 'bytes' \(\d+ bytes\) could not be decoded")
def audio_truncated_wav(ctx):
    buffer = io.BytesIO()
    sf.write(buffer, tone(), 8000, format="WAV")
    audio(buffer.getvalue()[:30])
