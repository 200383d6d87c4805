"""The built-in generated dataset ("shapes"): one coloured shape on a black background.

Every example is fully described by four attributes (:class:`ShapeAttributes`: colour, shape,
size, position). From the attributes come, deterministically, an image (:func:`render_image`),
a caption that fully determines the image (:func:`caption`, inverted by :func:`parse_caption`)
and a sound (:func:`render_audio`). :func:`make_shapes_dataset` builds a ``datasets.DatasetDict``
of them, and :func:`text_to_image_score` scores generated images against the true rendering of
their captions' attributes (the metric of the text -> image translation demo).

mmvq finds this data as its built-in dataset "shapes" (``DataConfig(builtin="shapes")``, the
default recipe) through the ``mmvq.datasets`` entry point ``shapes =
mmvq_adapters.shapes:ShapesDataset``: the core never imports it.

======================  ==========================================================================
module                  what it holds
======================  ==========================================================================
``attributes``          :class:`ShapeAttributes`, the attribute values, captions
``render``              images, shape masks, sounds
``scoring``             reading attributes back from pixels; the text -> image score
``dataset``             :func:`make_shapes_dataset`, :class:`ShapesDataset` (the built-in dataset)
``generation_metrics``  a prior's samples scored: validity, diversity, BLEU/ROUGE
======================  ==========================================================================
"""

from mmvq_adapters.shapes.attributes import (
    BACKGROUND,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    ShapeAttributes,
    all_attributes,
    caption,
    parse_caption,
    parse_pattern,
    sample_attributes,
)
from mmvq_adapters.shapes.dataset import (
    ShapesDataset,
    ShapesOptions,
    make_shapes_dataset,
    shapes_text_to_image_scorer,
)
from mmvq_adapters.shapes.render import (
    AUDIO_DURATION,
    AUDIO_PITCH_HZ,
    MIN_RESOLUTION,
    MIN_SAMPLE_RATE,
    render_audio,
    render_image,
    render_mask,
)
from mmvq_adapters.shapes.scoring import (
    FOREGROUND_THRESHOLD,
    MAX_PSNR_DB,
    SIZE_AREA_THRESHOLD,
    chance_accuracy,
    predict_attributes,
    text_to_image_score,
)

__all__ = [
    "AUDIO_DURATION",
    "AUDIO_PITCH_HZ",
    "BACKGROUND",
    "FOREGROUND_THRESHOLD",
    "MAX_PSNR_DB",
    "MIN_RESOLUTION",
    "MIN_SAMPLE_RATE",
    "PALETTE",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "SIZE_AREA_THRESHOLD",
    "ShapeAttributes",
    "ShapesDataset",
    "ShapesOptions",
    "all_attributes",
    "caption",
    "chance_accuracy",
    "make_shapes_dataset",
    "parse_caption",
    "parse_pattern",
    "predict_attributes",
    "render_audio",
    "render_image",
    "render_mask",
    "sample_attributes",
    "shapes_text_to_image_scorer",
    "text_to_image_score",
]
