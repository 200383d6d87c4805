"""The shapes data as a ``datasets.DatasetDict`` (:func:`make_shapes_dataset`) and as mmvq's
built-in dataset "shapes" (:class:`ShapesDataset`, registered through the ``mmvq.datasets``
entry-point group), with its text -> image scorer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mmvq.data.builtin import BuiltinDataset
from mmvq.utils.checks import check_int
from mmvq_adapters.shapes.attributes import (
    ShapeAttributes,
    all_attributes,
    caption,
    matches,
    parse_caption,
    parse_pattern,
    sample_attributes,
)
from mmvq_adapters.shapes.render import audio_wav_bytes, check_resolution, png_bytes
from mmvq_adapters.shapes.scoring import text_to_image_score

if TYPE_CHECKING:  # imported lazily at run time: importing the package stays cheap
    import datasets

__all__ = ["ShapesDataset", "ShapesOptions", "make_shapes_dataset", "shapes_text_to_image_scorer"]


def make_shapes_dataset(
    num_train: int = 2048,
    num_eval: int = 256,
    seed: int = 0,
    resolution: int = 32,
    with_audio: bool = False,
    sample_rate: int = 8000,
    audio_seconds: float = 1.0,
    holdout: Sequence[str] = (),
) -> datasets.DatasetDict:
    """Build the shapes dataset: a ``datasets.DatasetDict`` with splits "train" and "validation".

    Columns: ``image`` (``datasets.Image``), ``text`` (:func:`caption`), ``colour``, ``shape``,
    ``size``, ``position`` (strings) and, when ``with_audio``, ``audio``: ``datasets.Audio(
    decode=False)`` values ``{"path": None, "bytes": <16-bit PCM WAV written with soundfile>}``
    (readable without torchcodec). The train and validation attributes come from two independent
    child streams of ``np.random.SeedSequence(seed)``, so the same seed always gives the same
    data and the splits are not copies of each other. (The caption determines the image, so with
    only 240 combinations most validation examples also occur in training: validation measures
    fit, not generalisation to unseen combinations.)

    ``holdout``: attribute patterns (e.g. ``["purple triangle", "large circle center"]``, see
    :func:`~mmvq_adapters.shapes.attributes.parse_pattern`) whose combinations never occur in
    "train" or "validation"; a third split, "unseen", holds ``num_eval`` examples drawn from them
    only, to measure generalisation to combinations the model never saw.
    """
    import datasets

    check_int("num_train", num_train, minimum=1, fix=".")
    check_int("num_eval", num_eval, minimum=0, fix=".")
    check_int("seed", seed, minimum=0, fix=".")
    check_resolution(resolution)
    train_ss, eval_ss = np.random.SeedSequence(seed).spawn(2)

    features = {
        "image": datasets.Image(),
        "text": datasets.Value("string"),
        "colour": datasets.Value("string"),
        "shape": datasets.Value("string"),
        "size": datasets.Value("string"),
        "position": datasets.Value("string"),
    }
    if with_audio:
        features["audio"] = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}
    patterns = [parse_pattern(p) for p in holdout]
    unseen = [a for a in all_attributes() if matches(a, patterns)]
    if patterns and len(unseen) == len(all_attributes()):
        raise ValueError(
            f"holdout {list(holdout)} covers every combination; nothing is left to train"
        )
    plan = [("train", train_ss, num_train, False), ("validation", eval_ss, num_eval, False)]
    if patterns:
        plan.append(("unseen", np.random.SeedSequence([seed, 1]), num_eval, True))
    splits = {}
    for split, seed_seq, count, held in plan:
        rng = np.random.default_rng(seed_seq)
        attrs = _draw(rng, count, patterns, unseen if held else None)
        columns: dict[str, list[Any]] = {
            "image": [{"bytes": png_bytes(a, resolution), "path": None} for a in attrs],
            "text": [caption(a) for a in attrs],
            "colour": [a.colour for a in attrs],
            "shape": [a.shape for a in attrs],
            "size": [a.size for a in attrs],
            "position": [a.position for a in attrs],
        }
        if with_audio:
            columns["audio"] = [
                {"bytes": audio_wav_bytes(a, sample_rate, float(audio_seconds)), "path": None}
                for a in attrs
            ]
        ds = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
        if with_audio:
            # Cast at the Arrow level: datasets>=4 needs torchcodec to *encode* Audio values.
            ds = ds.cast_column("audio", datasets.Audio(sampling_rate=sample_rate, decode=False))
        splits[split] = ds
    return datasets.DatasetDict(splits)


def _draw(
    rng: np.random.Generator,
    count: int,
    patterns: list[dict[str, str]],
    unseen: list[ShapeAttributes] | None,
) -> list[ShapeAttributes]:
    """``count`` attribute draws: uniform over the held-out combinations (``unseen``), or
    uniform over the others (rejecting held-out draws)."""
    if unseen is not None:
        return [unseen[int(rng.integers(len(unseen)))] for _ in range(count)]
    out: list[ShapeAttributes] = []
    while len(out) < count:
        attrs = sample_attributes(rng)
        if not matches(attrs, patterns):
            out.append(attrs)
    return out


def shapes_text_to_image_scorer(images: list[Any], captions: list[str]) -> dict[str, float]:
    """Score images generated from captions of the shapes data (:func:`text_to_image_score`
    against the captions' attributes); captions that do not parse are left out."""
    attrs = [parse_caption(c) for c in captions]
    keep = [i for i, a in enumerate(attrs) if a is not None]
    if not keep:
        return {}
    return text_to_image_score([images[i] for i in keep], [attrs[i] for i in keep])


@dataclass
class ShapesOptions:
    """Options of the built-in "shapes" dataset (the recipes' ``--builtin_<field>`` flags)."""

    resolution: int = field(default=32, metadata={"help": "Built-in image size."})
    with_audio: bool | None = field(
        default=None,
        metadata={"help": "Built-in audio column; default: when 'audio' is a requested modality."},
    )
    sample_rate: int = field(default=8000, metadata={"help": "Built-in audio rate (Hz)."})
    holdout: str = field(
        default="",
        metadata={
            "help": "Attribute patterns never trained on, ';'-separated (e.g. 'purple triangle;"
            "large circle center'); adds an 'unseen' split of them."
        },
    )


class ShapesDataset(BuiltinDataset):
    """mmvq's built-in generated data, ``DataConfig(builtin="shapes")``: images (column
    ``image``), captions (``text``) and, for an ``audio`` modality, sounds (``audio``) of the
    same coloured shapes, plus their attribute columns."""

    options_class = ShapesOptions
    modalities = ("image", "text")  # "audio" too on request (with_audio)

    def build(
        self,
        *,
        num_train: int,
        num_eval: int,
        seed: int,
        modalities: Sequence[str],
        options: ShapesOptions,
    ) -> datasets.DatasetDict:
        with_audio = options.with_audio
        if with_audio is None:
            with_audio = "audio" in modalities
        return make_shapes_dataset(
            num_train=num_train,
            num_eval=num_eval,
            seed=seed,
            resolution=options.resolution,
            with_audio=with_audio,
            sample_rate=options.sample_rate,
            holdout=[p for p in options.holdout.split(";") if p.strip()],
        )

    def translation_scorers(self, column_map: Mapping[str, str]) -> dict[str, Any]:
        """``text->image`` scoring, when captions and images are read from their own columns."""
        if column_map.get("text") == "text" and column_map.get("image") == "image":
            return {"text->image": shapes_text_to_image_scorer}
        return {}
