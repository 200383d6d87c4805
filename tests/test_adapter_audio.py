"""Tests of the built-in audio adapter (mmvq_adapters.audio, mmvq_adapters.audio_utils).

All audio is synthesised here (numpy sines); files are written with soundfile into tmp_path.
"""

from __future__ import annotations

import copy
import json
import math
import pickle
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from mmvq.adapter import AdapterInputError, Tokens
from mmvq.testing import check_adapter
from mmvq_adapters.audio import AudioAdapter, AudioAdapterConfig, LogMelSpectrogram
from mmvq_adapters.audio_utils import load_waveform, resample, save_wav

torch.set_num_threads(1)

SR = 8000  # the cpu-small rate


def tone(freq: float, n: int, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def small_config(**overrides) -> AudioAdapterConfig:
    """cpu-small with 16 base channels and no attention: the fastest real configuration."""
    return AudioAdapterConfig.preset(
        "cpu-small", base_channels=16, attn_at_lowest=False, **overrides
    )


@pytest.fixture(scope="module")
def adapter() -> AudioAdapter:
    torch.manual_seed(0)
    return AudioAdapter(small_config())


@pytest.fixture(scope="module")
def batch(adapter: AudioAdapter) -> dict[str, torch.Tensor]:
    examples = [(tone(f, n), SR) for f, n in [(220, 8000), (440, 6000), (660, 3000)]]
    return adapter.collate([adapter.preprocess(e) for e in examples])


# ----------------------------------------------------------------------------- config
def test_cpu_small_preset_sizes() -> None:
    cfg = AudioAdapterConfig.preset("cpu-small")
    assert (cfg.sample_rate, cfg.n_mels, cfg.hop_length, cfg.downsample_factor) == (
        8000,
        32,
        128,
        4,
    )
    assert cfg.num_frames == 64 and cfg.token_grid == (8, 16)
    assert AudioAdapter(cfg).num_tokens() == 128
    # the default config is the cpu-small preset
    assert AudioAdapterConfig() == cfg


def test_gpu_base_preset_sizes() -> None:
    cfg = AudioAdapterConfig.preset("gpu-base")
    assert (cfg.sample_rate, cfg.n_mels, cfg.downsample_factor, cfg.max_seconds) == (
        24000,
        80,
        8,
        4.0,
    )
    assert cfg.num_frames == 376 and cfg.token_grid == (10, 47)


def test_preset_overrides_and_errors() -> None:
    assert AudioAdapterConfig.preset("cpu-small", code_dim=32).code_dim == 32
    with pytest.raises(
        ValueError, match=r"unknown AudioAdapterConfig preset 'tiny'.*cpu-small.*gpu-base"
    ):
        AudioAdapterConfig.preset("tiny")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['n_mel'\]"):
        AudioAdapterConfig.preset("cpu-small", n_mel=40)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(n_mels=30), r"n_mels \(30\) must be divisible by the downsampling factor 4"),
        (dict(crop="end"), r"crop must be one of \('start', 'random', 'center'\), got 'end'"),
        (dict(duration_policy="variable"), r"duration_policy must be one of \('pad_crop',\)"),
        (dict(sample_rate=0), r"sample_rate must be a positive int, got 0"),
        (dict(max_seconds=-1.0), r"max_seconds must be a finite number > 0, got -1.0"),
        (dict(f_max=5000.0), r"f_max must be None or in \(f_min, sample_rate/2\]"),
        (dict(win_length=1024), r"win_length \(1024\) must be <= n_fft \(512\)"),
        (dict(vocoder="hifigan"), r"vocoder must be one of \('griffinlim', 'custom'\)"),
        (dict(log_floor=0.0), r"log_floor must be a finite number > 0"),
        (dict(max_seconds=0.1), r"smaller than the discriminator's minimum input 24"),
        (dict(channel_mult=()), r"channel_mult"),
    ],
)
def test_config_rejects_bad_fields(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        small_config(**overrides)


@pytest.mark.parametrize(
    "max_seconds,hop", [(1.0, 128), (0.5, 128), (0.496, 128), (0.75, 100), (1.3, 64), (0.6, 200)]
)
def test_frame_layout_fits_every_clip_length(max_seconds: float, hop: int) -> None:
    cfg = small_config(max_seconds=max_seconds, hop_length=hop, n_fft=max(256, hop))
    assert cfg.padded_samples >= cfg.num_samples
    assert cfg.num_frames % cfg.downsample_factor == 0
    a = AudioAdapter(cfg)
    full = a.preprocess((tone(440, cfg.num_samples), SR))
    assert full["mel"].shape == (1, 32, cfg.num_frames)
    real = math.ceil(cfg.num_samples / hop)
    assert int(full["frame_mask"].sum()) == real
    longer = a.preprocess((tone(440, cfg.num_samples + 3 * hop), SR))
    torch.testing.assert_close(longer["mel"], full["mel"])  # crop="start" keeps the first window
    tokens = a.encode(a.collate([full, a.preprocess((tone(440, 7), SR))]))
    rows, f = cfg.token_grid[0], cfg.downsample_factor
    assert tokens.mask.shape == (2, a.num_tokens())
    assert int(tokens.mask[0].sum()) == rows * math.ceil(real / f)
    assert int(tokens.mask[1].sum()) == cfg.token_grid[0]  # one column for a 7-sample clip


def test_config_json_round_trip() -> None:
    cfg = AudioAdapterConfig.preset("gpu-base", crop="random")
    data = json.loads(cfg.to_json_string())
    assert isinstance(data["channel_mult"], list)
    assert AudioAdapterConfig.from_dict(data) == cfg


def test_entry_point_provides_the_adapter() -> None:
    eps = {ep.name: ep for ep in entry_points(group="mmvq.adapters")}
    assert eps["audio"].value == "mmvq_adapters.audio:AudioAdapter"
    assert eps["audio"].load() is AudioAdapter


def test_contract_kit(tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, tone(330, 12000, sr=16000), 16000, subtype="PCM_16")
    examples = [
        {"array": tone(440, 8000), "sampling_rate": SR},  # full length
        (tone(880, 3000), SR),  # padded
        {"path": str(path), "bytes": None},  # a file at another rate
    ]
    report = check_adapter(AudioAdapter, examples, config=small_config())
    assert report.skipped == []
    assert {"gradient", "last_layer", "gan", "state_dict", "bad_inputs"} <= set(report.names)


# ------------------------------------------------------------------- accepted inputs
def test_preprocess_output_layout(adapter: AudioAdapter) -> None:
    out = adapter.preprocess((tone(440, 6000), SR))
    assert set(out) == {"mel", "frame_mask"}
    assert out["mel"].shape == (1, 32, 64) and out["mel"].dtype == torch.float32
    assert out["frame_mask"].shape == (64,) and out["frame_mask"].dtype == torch.bool
    # frames whose centre lies in the clip: ceil(6000 / 128) = 47
    assert int(out["frame_mask"].sum()) == 47 and bool(out["frame_mask"][:47].all())
    # padded frames hold exact silence
    assert torch.all(out["mel"][..., 47:] == adapter.features.silence)
    assert out["mel"][..., :47].max() > adapter.features.silence + 1.0


def test_normalisation_is_the_documented_affine_log(adapter: AudioAdapter) -> None:
    cfg = adapter.config
    wave = torch.from_numpy(tone(300, cfg.padded_samples))
    mel = adapter.features.mel(wave)
    expected = (torch.log(mel.clamp(min=cfg.log_floor)) - cfg.log_mel_mean) / cfg.log_mel_std
    torch.testing.assert_close(adapter.features(wave), expected)
    torch.testing.assert_close(adapter.features.linear(expected), mel.clamp(min=cfg.log_floor))


def test_all_input_forms_give_the_same_features(adapter: AudioAdapter, tmp_path: Path) -> None:
    wave = tone(523.25, 5000)
    ref = adapter.preprocess({"array": wave, "sampling_rate": SR})
    path = tmp_path / "clip.wav"
    sf.write(path, wave, SR, subtype="FLOAT")  # lossless float wav
    raw = path.read_bytes()
    forms = {
        "tuple": (wave, SR),
        "tensor in dict": {"array": torch.from_numpy(wave), "sampling_rate": SR},
        "list in tuple": (wave.tolist(), float(SR)),
        "numpy int sr": {"array": wave, "sampling_rate": np.int64(SR)},
        "str path": str(path),
        "Path": path,
        "bytes": raw,
        "datasets bytes": {"path": "ignored-when-bytes.wav", "bytes": raw},
        "datasets path only": {"path": str(path), "bytes": None},
    }
    for name, example in forms.items():
        out = adapter.preprocess(example)
        torch.testing.assert_close(out["mel"], ref["mel"], atol=1e-5, rtol=0, msg=name)
        assert torch.equal(out["frame_mask"], ref["frame_mask"]), name


def test_datasets_dict_prefers_bytes_over_path(adapter: AudioAdapter, tmp_path: Path) -> None:
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, tone(300, 4000), SR, subtype="FLOAT")
    sf.write(b, tone(1500, 4000), SR, subtype="FLOAT")
    out = adapter.preprocess({"path": str(a), "bytes": b.read_bytes()})
    torch.testing.assert_close(out["mel"], adapter.preprocess(str(b))["mel"])
    assert not torch.allclose(out["mel"], adapter.preprocess(str(a))["mel"])


def test_integer_pcm_is_scaled_to_unit_range() -> None:
    wave = tone(440, 4000)
    pcm16 = np.round(wave * 32767).astype(np.int16)
    got = load_waveform((pcm16, SR)).samples
    torch.testing.assert_close(got, torch.from_numpy(wave), atol=1.0 / 32768, rtol=0)
    pcm8 = np.round(wave * 127 + 128).astype(np.uint8)  # unsigned 8-bit wav, centred on 128
    torch.testing.assert_close(
        load_waveform((pcm8, SR)).samples, torch.from_numpy(wave), atol=1 / 128, rtol=0
    )


def test_channel_rule_and_mono_mixdown() -> None:
    left, right = tone(440, 3000), tone(880, 3000, amp=0.25)
    mono = (left + right) / 2
    channels_first = np.stack([left, right])  # [C, T]
    for array in (channels_first, channels_first.T, torch.from_numpy(channels_first)):
        wave = load_waveform((array, SR))
        torch.testing.assert_close(wave.samples, torch.from_numpy(mono))
    # [1, T] and [T, 1] are mono
    assert load_waveform((left[None], SR)).samples.shape == (3000,)
    assert load_waveform((left[:, None], SR)).samples.shape == (3000,)
    # both axes <= 2: read as channels-first [C, T] (documented rule)
    two_by_two = np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32)
    torch.testing.assert_close(load_waveform((two_by_two, SR)).samples, torch.tensor([0.5, 0.0]))


def test_stereo_file_is_mixed_down(adapter: AudioAdapter, tmp_path: Path) -> None:
    left, right = tone(440, 4000), tone(440, 4000, amp=0.1)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")  # soundfile: [T, C]
    torch.testing.assert_close(
        adapter.preprocess(path)["mel"],
        adapter.preprocess(((left + right) / 2, SR))["mel"],
        atol=1e-5,
        rtol=0,
    )


def test_resampling_44k1_to_config_rate(adapter: AudioAdapter) -> None:
    hi_sr = 44100
    hi = tone(440, hi_sr // 2, sr=hi_sr)  # 0.5 s
    wave = resample(load_waveform((hi, hi_sr)), SR)
    assert wave.sample_rate == SR and wave.samples.numel() == SR // 2
    out = adapter.preprocess({"array": hi, "sampling_rate": hi_sr})
    ref = adapter.preprocess((tone(440, SR // 2), SR))
    # 0.5 s at 8 kHz = 4000 samples -> ceil(4000 / 128) = 32 real frames (not 2.76 s of frames)
    assert int(out["frame_mask"].sum()) == 32
    assert torch.equal(out["frame_mask"], ref["frame_mask"])
    real = ref["frame_mask"]
    # same peak mel bin in every real frame, and close values where there is energy
    assert torch.equal(out["mel"][0, :, real].argmax(0), ref["mel"][0, :, real].argmax(0))
    loud = ref["mel"][0][:, real] > adapter.features.silence + 1.0
    assert loud.any()
    diff = (out["mel"][0][:, real][loud] - ref["mel"][0][:, real][loud]).abs()
    # the resampling filter's edge effects reach ~0.09 in the last frames; elsewhere ~1e-3
    assert diff.max() < 0.15 and diff.mean() < 0.02


def test_crop_policies() -> None:
    first, second = tone(300, SR), tone(1200, SR)
    long = np.concatenate([first, second])  # 2 s; the config keeps 1 s
    window = {"start": first, "center": long[SR // 2 : SR // 2 + SR]}
    for crop, expected in window.items():
        a = AudioAdapter(small_config(crop=crop))
        out = a.preprocess((long, SR))
        torch.testing.assert_close(out["mel"], a.preprocess((expected, SR))["mel"])
        assert bool(out["frame_mask"][:63].all())


def test_random_crop_is_a_window_of_the_clip() -> None:
    a = AudioAdapter(small_config(crop="random"))
    clip = np.random.default_rng(0).uniform(-0.5, 0.5, 2 * SR).astype(np.float32)
    torch.manual_seed(3)
    starts = set()
    for _ in range(5):
        start, length = a._crop(clip.size)
        assert length == SR and 0 <= start <= SR
        starts.add(start)
    assert len(starts) > 1
    # and preprocess uses it: two calls under different seeds see different windows
    torch.manual_seed(4)
    first = a.preprocess((clip, SR))["mel"]
    assert any(not torch.equal(first, a.preprocess((clip, SR))["mel"]) for _ in range(3))


# ------------------------------------------------------------------------ bad inputs
def test_bad_inputs_are_declared_and_rejected(adapter: AudioAdapter) -> None:
    declared = adapter.bad_inputs()
    descriptions = " | ".join(b.description for b in declared)
    for needed in (
        "NaN",
        "Inf",
        "zero-length",
        "more than two channels",
        "without sample rate",
        "corrupt bytes",
        "does not exist",
        "sample rate 0",
        "negative sample rate",
    ):
        assert needed in descriptions, needed
    for bad in declared:
        with pytest.raises(bad.error) as info:
            adapter.preprocess(bad.example)
        assert bad.match.lower() in str(info.value).lower(), (bad.description, str(info.value))


@pytest.mark.parametrize(
    "example,match",
    [
        (
            {"array": np.array([0.1, np.nan, 0.2], np.float32), "sampling_rate": SR},
            r"'array' contains 1 NaN/Inf sample\(s\); clean the waveform",
        ),
        ((np.array([0.0, np.inf], np.float32), SR), r"NaN/Inf"),
        ((np.zeros(0, np.float32), SR), r"'array' is empty \(shape \(0,\), zero samples\)"),
        (
            (np.zeros((4, 100), np.float32), SR),
            r"shape \(4, 100\): more than 2 channels.*mix it down",
        ),
        ((np.zeros((100, 6), np.float32), SR), r"shape \(100, 6\): more than 2 channels"),
        (
            np.zeros(800, np.float32),
            r"bare array of shape \(800,\) without a sample rate.*sampling_rate",
        ),
        (torch.zeros(800), r"bare array of shape \(800,\) without a sample rate"),
        ({"array": np.zeros(800, np.float32)}, r"'array' but no 'sampling_rate'"),
        ({"array": np.zeros(800, np.float32), "sampling_rate": None}, r"no 'sampling_rate'"),
        ((np.zeros(800, np.float32), 0), r"'sampling_rate' must be > 0, got 0"),
        ((np.zeros(800, np.float32), -8000), r"must be > 0, got -8000"),
        ((np.zeros(800, np.float32), float("nan")), r"must be > 0, got nan"),
        ((np.zeros(800, np.float32), 22050.5), r"whole number of Hz, got 22050.5"),
        ((np.zeros(800, np.float32), True), r"positive number.*got True"),
        ((np.zeros(800, np.complex64), SR), r"dtype complex64"),
        (b"", r"'bytes' is empty \(0 bytes\)"),
        (b"\x00\xff" * 300, r"'bytes' \(600 bytes\) could not be decoded by soundfile"),
        ({"path": None, "bytes": b"not audio at all" * 10}, r"could not be decoded by soundfile"),
        ({"path": None, "bytes": "text"}, r"'bytes' must be bytes, got str"),
        ("/no/such/dir/clip.wav", r"'/no/such/dir/clip.wav' does not exist"),
        ({"path": "/no/such/dir/clip.wav", "bytes": None}, r"does not exist"),
        ({"audio": "x.wav"}, r"keys \['audio'\]"),
        (object(), r"type object is not supported"),
    ],
)
def test_bad_input_messages(adapter: AudioAdapter, example: object, match: str) -> None:
    with pytest.raises(AdapterInputError, match=match):
        adapter.preprocess(example)


def test_corrupt_file_and_directory(adapter: AudioAdapter, tmp_path: Path) -> None:
    bad = tmp_path / "x.wav"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    with pytest.raises(
        AdapterInputError, match=r"file '.*x\.wav' could not be decoded by soundfile"
    ):
        adapter.preprocess(str(bad))
    with pytest.raises(AdapterInputError, match=r"could not be decoded"):
        adapter.preprocess({"path": str(bad), "bytes": None})
    with pytest.raises(AdapterInputError, match=r"is not a file"):
        adapter.preprocess(tmp_path)


def test_file_with_nan_samples_is_rejected(adapter: AudioAdapter, tmp_path: Path) -> None:
    wave = tone(440, 2000)
    wave[5] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    with pytest.raises(AdapterInputError, match="NaN/Inf"):
        adapter.preprocess(path)


# ----------------------------------------------------------------------- model side
def test_encode_shapes_and_mask(adapter: AudioAdapter, batch: dict[str, torch.Tensor]) -> None:
    tokens = adapter.encode(batch)
    assert isinstance(tokens, Tokens)
    assert tokens.z.shape == (3, adapter.num_tokens(), adapter.config.code_dim)
    assert tokens.mask.shape == (3, 128) and tokens.mask.dtype == torch.bool
    # real frames 63, 47, 24 -> token columns ceil(/4) = 16, 12, 6; x 8 mel rows
    assert tokens.mask.sum(1).tolist() == [128, 96, 48]
    grid = tokens.mask.reshape(3, 8, 16)
    assert bool(grid[1, :, :12].all()) and not bool(grid[1, :, 12:].any())


def test_token_layout_is_row_major_over_mel_then_time(adapter: AudioAdapter, batch) -> None:
    grid = adapter.encoder(batch["mel"])  # [B, D, rows, cols]
    z = adapter.encode(batch).z
    r, c = 3, 5
    torch.testing.assert_close(z[:, r * 16 + c], grid[:, :, r, c])


def test_decode_and_gradient(adapter: AudioAdapter, batch) -> None:
    adapter.zero_grad()
    tokens = adapter.encode(batch)
    recon = adapter.decode(tokens.z, batch)
    assert recon.shape == batch["mel"].shape
    assert adapter.decode(tokens.z, None).shape == recon.shape
    loss = adapter.reconstruction_loss(batch, recon)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.mean().backward()
    for name, module in (("encoder", adapter.encoder), ("decoder", adapter.decoder)):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    assert adapter.last_layer() is adapter.decoder.conv_out.weight
    assert adapter.last_layer().grad is not None and adapter.last_layer().grad.abs().sum() > 0
    adapter.zero_grad()


def test_model_side_rejects_bad_batches(adapter: AudioAdapter, batch) -> None:
    with pytest.raises(AdapterInputError, match=r"batch has no 'frame_mask'"):
        adapter.encode({"mel": batch["mel"]})
    with pytest.raises(
        AdapterInputError,
        match=r"batch\['mel'\] has shape \(3, 1, 32, 32\), expected \[B, 1, 32, 64\]",
    ):
        adapter.encode({"mel": batch["mel"][..., :32], "frame_mask": batch["frame_mask"]})
    with pytest.raises(AdapterInputError, match=r"frame_mask'\] has shape .* expected bool"):
        adapter.encode({"mel": batch["mel"], "frame_mask": batch["frame_mask"].float()})
    with pytest.raises(
        AdapterInputError, match=r"h has shape \(3, 100, 64\), expected \[B, 128, 64\]"
    ):
        adapter.decode(torch.zeros(3, 100, 64))
    with pytest.raises(
        AdapterInputError, match=r"recon has shape \(2, 1, 32, 64\), expected \[3, 1, 32, 64\]"
    ):
        adapter.reconstruction_loss(batch, torch.zeros(2, 1, 32, 64))


def test_loss_ignores_padding_and_is_zero_for_perfect_recon(adapter: AudioAdapter, batch) -> None:
    mel, mask = batch["mel"], batch["frame_mask"]
    assert torch.all(adapter.reconstruction_loss(batch, mel.clone()) == 0)
    noisy = mel + 0.3
    base = adapter.reconstruction_loss(batch, noisy)
    torch.testing.assert_close(base, torch.full((3,), 0.3))
    garbage = torch.where(mask[:, None, None, :], noisy, torch.full_like(noisy, 99.0))
    torch.testing.assert_close(adapter.reconstruction_loss(batch, garbage), base)
    # per-sample: corrupting sample 1 only changes loss[1]
    worse = noisy.clone()
    worse[1] += 1.0
    changed = adapter.reconstruction_loss(batch, worse)
    torch.testing.assert_close(changed[[0, 2]], base[[0, 2]])
    torch.testing.assert_close(changed[1], torch.tensor(1.3))


def test_spectral_convergence_term() -> None:
    torch.manual_seed(0)
    a0 = AudioAdapter(small_config())
    a1 = AudioAdapter(small_config(spectral_convergence_weight=0.5))
    b = a0.collate([a0.preprocess((tone(440, 8000), SR)), a0.preprocess((tone(880, 5000), SR))])
    recon = b["mel"] + 0.1  # linear mel scaled by exp(0.1 * std) everywhere
    l0, l1 = a0.reconstruction_loss(b, recon), a1.reconstruction_loss(b, recon)
    sc = math.exp(0.1 * a0.config.log_mel_std) - 1.0
    torch.testing.assert_close(l1 - l0, torch.full((2,), 0.5 * sc), rtol=1e-4, atol=1e-5)
    metrics = a0.metrics(b, recon)
    assert metrics["spectral_convergence"] == pytest.approx(sc, rel=1e-4)


def test_metrics(adapter: AudioAdapter, batch) -> None:
    perfect = adapter.metrics(batch, batch["mel"])
    assert set(perfect) == {"logmel_l1", "spectral_convergence"}
    assert perfect == {"logmel_l1": 0.0, "spectral_convergence": 0.0}
    off = adapter.metrics(batch, batch["mel"] + 0.25)
    assert all(isinstance(v, float) for v in off.values())
    # logmel_l1 is in natural-log units: 0.25 normalised x log_mel_std
    assert off["logmel_l1"] == pytest.approx(0.25 * adapter.config.log_mel_std, rel=1e-5)


def test_gan_head(adapter: AudioAdapter, batch) -> None:
    disc = adapter.discriminator()
    assert disc is not adapter.discriminator()  # fresh each call
    recon = adapter.decode(adapter.encode(batch).z, batch)
    real, fake = adapter.gan_inputs(batch, recon)
    assert real.shape == fake.shape == (3, 1, 32, 64)
    pad = ~batch["frame_mask"]
    assert torch.equal(fake.detach()[..., pad[1]][1], real[..., pad[1]][1])
    logits = disc(fake)
    assert logits.shape[:2] == (3, 1) and logits.numel() > 3
    logits.mean().backward()
    assert adapter.last_layer().grad is not None and adapter.last_layer().grad.abs().sum() > 0
    adapter.zero_grad()


def test_weights_round_trip_through_safetensors(
    adapter: AudioAdapter, batch, tmp_path: Path
) -> None:
    state = adapter.state_dict()
    assert not any("mel" in k or "fb" in k or "window" in k for k in state), "DSP state leaked"
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    clone = AudioAdapter.from_config_dict(json.loads(adapter.config.to_json_string()))
    clone.load_state_dict(load_file(tmp_path / "w.safetensors"))
    adapter.eval(), clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(clone.encode(batch).z, adapter.encode(batch).z)
    adapter.train()


def test_features_stay_out_of_the_module_tree(adapter: AudioAdapter) -> None:
    names = {n for n, _ in adapter.named_modules()}
    assert "features" not in names
    assert isinstance(adapter.features, LogMelSpectrogram)
    adapter.double()
    try:  # preprocess still yields float32 features on the CPU
        out = adapter.preprocess((tone(440, 1000), SR))
        assert out["mel"].dtype == torch.float32 and out["mel"].device.type == "cpu"
    finally:
        adapter.float()


def test_adapter_pickles_for_dataloader_workers(adapter: AudioAdapter) -> None:
    clone = pickle.loads(pickle.dumps(adapter))
    copied = copy.deepcopy(adapter)
    example = (tone(440, 3000), SR)
    ref = adapter.preprocess(example)
    for other in (clone, copied):
        assert other.features is not adapter.features
        torch.testing.assert_close(other.preprocess(example)["mel"], ref["mel"])


# ---------------------------------------------------------------------- output side
def dominant_frequency(wave: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sr)[spectrum.argmax()])


def test_postprocess_griffin_lim_recovers_pitch(adapter: AudioAdapter) -> None:
    b = adapter.collate([adapter.preprocess((tone(f, 8000), SR)) for f in (440, 1000)])
    torch.manual_seed(0)
    waves = adapter.postprocess(b["mel"])
    assert len(waves) == 2
    for wave, freq in zip(waves, (440, 1000)):
        assert isinstance(wave, np.ndarray) and wave.dtype == np.float32 and wave.ndim == 1
        assert wave.shape == (adapter.config.num_samples,)
        assert np.isfinite(wave).all()
        bin_width = SR / adapter.config.n_fft * 2  # mel bins are coarser than FFT bins
        assert abs(dominant_frequency(wave, SR) - freq) < bin_width * 2
        # loudness is kept (fixed normalisation): RMS near the input's 0.5 / sqrt(2)
        assert 0.1 < float(np.sqrt(np.mean(wave**2))) < 0.7


def test_custom_vocoder_hook() -> None:
    a = AudioAdapter(small_config())
    b = a.collate([a.preprocess((tone(440, 4000), SR))])
    seen = {}

    def vocoder(mel: torch.Tensor) -> torch.Tensor:
        seen["mel"] = mel
        return torch.ones(mel.shape[0], a.config.num_samples + 100)

    a.set_vocoder(vocoder)
    assert a.config.vocoder == "custom"
    waves = a.postprocess(b["mel"])
    assert seen["mel"].shape == (1, 32, 64)
    torch.testing.assert_close(seen["mel"], a.features.linear(b["mel"]).squeeze(1))
    assert waves[0].shape == (a.config.num_samples,) and np.all(waves[0] == 1.0)
    a.set_vocoder(lambda mel: [np.zeros(10)])  # list form
    assert a.postprocess(b["mel"])[0].shape == (10,)
    a.set_vocoder(lambda mel: torch.zeros(5))
    with pytest.raises(RuntimeError, match=r"expected 1 waveforms"):
        a.postprocess(b["mel"])
    with pytest.raises(TypeError, match="expects a callable"):
        a.set_vocoder("hifigan")
    a.set_vocoder(None)
    assert a.config.vocoder == "griffinlim"
    assert a.postprocess(b["mel"])[0].shape == (a.config.num_samples,)
    custom = AudioAdapter(small_config(vocoder="custom"))
    with pytest.raises(RuntimeError, match=r"no vocoder is set; call adapter.set_vocoder"):
        custom.postprocess(b["mel"])


def test_save_wav_round_trip(tmp_path: Path) -> None:
    wave = tone(440, 2000, amp=1.2)  # above 1: kept by the default FLOAT subtype
    path = save_wav(wave, tmp_path / "out.wav", SR)
    data, sr = sf.read(path, dtype="float32")
    assert sr == SR
    np.testing.assert_array_equal(data, wave)
    assert AudioAdapter.save_wav is save_wav
    save_wav(torch.from_numpy(np.stack([wave, wave])), tmp_path / "st.wav", SR, subtype="PCM_16")
    assert sf.info(str(tmp_path / "st.wav")).channels == 2
    with pytest.raises(AdapterInputError, match="'sample_rate' must be > 0"):
        save_wav(wave, tmp_path / "bad.wav", 0)
    with pytest.raises(AdapterInputError, match="NaN/Inf"):
        save_wav(np.array([np.nan, 0.0], np.float32), tmp_path / "bad.wav", SR)
    with pytest.raises(AdapterInputError, match=r"shape \(1, 2, 3\)"):
        save_wav(np.zeros((1, 2, 3), np.float32), tmp_path / "bad.wav", SR)


# ------------------------------------------------------------------------- overfit
OVERFIT_STEPS = 100
OVERFIT_THRESHOLD = 0.12  # normalised log-mel L1 (x log_mel_std = 0.48 nats); start ~1.2


def test_overfit_four_tones() -> None:
    """encode -> decode (no codebook) memorises 4 tones of different pitch and duration."""
    torch.manual_seed(0)
    a = AudioAdapter(small_config())
    specs = [(220, 8000), (440, 6000), (660, 4000), (1200, 7000)]
    b = a.collate([a.preprocess((tone(f, n), SR)) for f, n in specs])
    mean_baseline = a.reconstruction_loss(b, b["mel"].mean(0, keepdim=True).expand_as(b["mel"]))
    opt = torch.optim.Adam(a.parameters(), lr=3e-3)
    for _ in range(OVERFIT_STEPS):
        loss = a.reconstruction_loss(b, a.decode(a.encode(b).z, b)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = a.reconstruction_loss(b, a.decode(a.encode(b).z, b))
    print(
        f"overfit: log-mel L1 {final.mean():.4f} (batch-mean baseline {mean_baseline.mean():.4f})"
    )
    assert float(final.mean()) < OVERFIT_THRESHOLD
    assert float(final.max()) < 0.5 * float(mean_baseline.min())
