"""Tiny real models and data for the training-loop tests (CPU, about a second per short run)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import datasets
import pytest
import torch

from mmvq.data import DataConfig, MultimodalDataset, load_data
from mmvq.model import MultimodalVQ, MultimodalVQConfig
from mmvq.training.config import TrainConfig

__all__ = [
    "clean_accelerate",
    "CAPTION_LENGTH",
    "reset_accelerate",
    "tiny_config",
    "tiny_data",
    "tiny_model",
    "tiny_prior",
    "torch_dataset",
]

CAPTION_LENGTH = 48  # the longest shapes caption plus EOS fits


def tiny_prior(model: MultimodalVQ, seed: int = 0) -> Any:
    """An untrained 1-layer prior over ``model``'s codes (captions padded, images never)."""
    from mmvq.prior import MultimodalPrior, MultimodalTokenizer, PriorConfig

    tok = MultimodalTokenizer.from_model(model, padding={"image": False, "text": True})
    torch.manual_seed(seed)
    config = PriorConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    return MultimodalPrior.build(tok, config)


def tiny_model(
    seed: int = 0,
    *,
    num_codes: int = 64,
    restart_every: int = 3,
    image: dict[str, Any] | None = None,
) -> MultimodalVQ:
    """Image (16 px) + text (byte tokens) adapters, a 64-code codebook, a 1-layer fusion trunk."""
    torch.manual_seed(seed)
    image_cfg = dict(
        resolution=16,
        base_channels=8,
        channel_mult=(1, 2),
        num_groups=4,
        disc_base_channels=8,
        disc_num_layers=2,
        **(image or {}),
    )
    text_cfg = dict(
        max_length=CAPTION_LENGTH, d_model=32, num_layers=1, num_heads=2, decoder_layers=1
    )
    config = MultimodalVQConfig(
        codebook={
            "num_codes": num_codes,
            "code_dim": 16,
            "restart_every": restart_every,
            "reservoir_size": 256,
        },
        decoder={"dim": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0},
    )
    return MultimodalVQ.build({"image": ("image", image_cfg), "text": ("text", text_cfg)}, config)


def tiny_data(
    num_train: int = 24, num_eval: int = 6, *, with_audio: bool = False
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """The built-in shapes data at 16 px."""
    modalities = ["image", "text"] + (["audio"] if with_audio else [])
    return load_data(
        DataConfig(
            builtin_num_train=num_train,
            builtin_num_eval=num_eval,
            builtin_options={"resolution": 16, "with_audio": with_audio},
        ),
        modalities,
    )


def tiny_config(output_dir: Any, **overrides: Any) -> TrainConfig:
    """Few steps, small batches, everything that writes files switched on, no progress bar."""
    options: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=4,
        per_device_batch_size=4,
        learning_rate=1e-3,
        gan_start_step=2,
        log_every=1,
        eval_every=0,
        save_every=0,
        report_to="none",
        cpu=True,
        num_sample_rows=4,
        max_eval_samples=6,
        tqdm=False,
        shuffle=True,
    )
    options.update(overrides)
    return TrainConfig(**options)


def torch_dataset(model: MultimodalVQ, ds: datasets.Dataset) -> MultimodalDataset:
    """The shapes data as preprocessed ``{modality: tensors}`` examples."""
    return MultimodalDataset(ds, dict(model.adapters), {"image": "image", "text": "text"})


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state so the next Accelerator starts clean."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(autouse=True, name="clean_accelerate")
def clean_accelerate() -> Iterator[None]:
    """Autouse in the modules that import it: each test starts (and ends) with fresh accelerate
    state."""
    reset_accelerate()
    warnings.filterwarnings("ignore", message=".*TextTruncation.*")
    yield
    reset_accelerate()
