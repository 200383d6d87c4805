"""Bad inputs to the Python API: configs, model building, batches and generation."""

from __future__ import annotations

import numpy as np
import torch

from bad_inputs.helpers import (
    AdapterInputError,
    MultimodalVQ,
    MultimodalVQConfig,
    SamplingConfig,
    TrainConfig,
    case,
    image_model_batch,
    with_pixels,
)
from mmvq.data import DataConfig, DataError


@case("api", ValueError, r"CodebookConfig\.num_codes=2000000000 .* more than this machine")
def num_codes_beyond_the_machine(ctx):
    MultimodalVQ.build({"image": "image"}, {"codebook": {"num_codes": 2_000_000_000}})


@case("api", ValueError, r"CodebookConfig\.code_dim = 0")
def code_dim_zero(ctx):
    MultimodalVQConfig(codebook={"num_codes": 8, "code_dim": 0})


@case("api", ValueError, r"modality_dropout must be in \[0, 1\), got 1\.0")
def modality_dropout_one(ctx):
    MultimodalVQConfig(modality_dropout=1.0)


@case("api", ValueError, r"modality name '\.\./x' is not allowed")
def modality_name_that_is_a_path(ctx):
    from toy_adapters import VecAdapter

    MultimodalVQ({"../x": VecAdapter(code_dim=8)}, {"codebook": {"code_dim": 8}})


@case("api", AdapterInputError, r"batch\['pixel_values'\] has dtype torch\.float64")
def float64_pixel_values(ctx):
    model, batch = image_model_batch()
    model(with_pixels(batch, batch["image"]["pixel_values"].double()))


@case("api", AdapterInputError, r"batch\['pixel_values'\] has dtype torch\.uint8")
def uint8_pixel_values(ctx):
    model, batch = image_model_batch()
    model.encode(with_pixels(batch, torch.zeros(1, 3, 16, 16, dtype=torch.uint8)))


@case("api", AdapterInputError, r"batch\['pixel_values'\] is a numpy\.ndarray")
def numpy_pixel_values(ctx):
    model, batch = image_model_batch()
    model(with_pixels(batch, np.zeros((1, 3, 16, 16), np.float32)))


@case("api", AdapterInputError, r"batch has modality 'depth', which this model does not know")
def batch_of_an_unknown_modality(ctx):
    model, batch = image_model_batch()
    model({**batch, "depth": batch["image"]})


@case("api", ValueError, r"detail codes\['image'\] hold values outside \[-1, 31\]")
def codes_outside_the_codebook(ctx):
    model, _ = image_model_batch()
    model.decode({"image": torch.full((1, 64), 99)})


@case("api", AdapterInputError, r"example 0 has modality 'txt', which this model does not know")
def prepare_with_a_misspelt_modality(ctx):
    model, _ = image_model_batch()
    model.prepare([{"txt": "a red circle"}])


@case("api", AdapterInputError, r"\['image'\] is both a source and a target")
def generate_into_a_source(ctx):
    from mmvq.generation import generate

    model, batch = image_model_batch()
    generate(model, batch, ["image"])


# ---------------------------------------------------------------- config constructors
# (config class, its keyword arguments, the error, what the message must say)
_CONFIGS = {
    "on_bad_row_unknown": (
        TrainConfig,
        dict(on_bad_row="drop"),
        ValueError,
        r"TrainConfig\.on_bad_row",
    ),
    "overwrite_output_dir_not_a_bool": (
        TrainConfig,
        dict(overwrite_output_dir="yes"),
        ValueError,
        r"TrainConfig\.overwrite_output_dir",
    ),
    "batch_size_zero": (
        TrainConfig,
        dict(per_device_batch_size=0),
        ValueError,
        r"TrainConfig\.per_device_batch_size",
    ),
    "negative_learning_rate": (
        TrainConfig,
        dict(learning_rate=-1e-3),
        ValueError,
        r"TrainConfig\.learning_rate",
    ),
    "ema_decay_one": (
        TrainConfig,
        dict(ema_decay=1.0),
        ValueError,
        r"TrainConfig\.ema_decay=1\.0 would freeze",
    ),
    "empty_output_dir": (
        TrainConfig,
        dict(output_dir=" "),
        ValueError,
        r"TrainConfig\.output_dir must be a non-empty path",
    ),
    "resume_from_checkpoint_not_a_string": (
        TrainConfig,
        dict(resume_from_checkpoint=5),
        ValueError,
        r"TrainConfig\.resume_from_checkpoint must be None, 'latest'",
    ),
    "negative_temperature": (
        SamplingConfig,
        dict(temperature=-1.0),
        ValueError,
        r"SamplingConfig\.temperature",
    ),
    "data_file_of_an_unknown_type": (
        DataConfig,
        dict(train_file="data.txt"),
        DataError,
        r"DataConfig\.train_file='data\.txt' has extension '\.txt'",
    ),
    "two_data_sources": (
        DataConfig,
        dict(dataset_name="imagefolder", train_file="a.jsonl"),
        DataError,
        r"both dataset_name='imagefolder' and train_file",
    ),
}

for _name, (_cls, _kwargs, _error, _match) in _CONFIGS.items():
    case("api", _error, _match, name=_name)(lambda ctx, c=_cls, k=_kwargs: c(**k))
