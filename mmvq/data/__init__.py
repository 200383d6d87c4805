"""The data layer: Hugging Face ``datasets`` in, model batches out.

==============  ========================================================================
module          what it holds
==============  ========================================================================
``config``      :class:`DataConfig` (source, column map), :class:`DataError`
``builtin``     built-in generated datasets, found through the ``mmvq.datasets`` entry points
``columns``     how mapped columns are read, as the adapters declare (paths, undecoded media)
``files``       local data files and folders of media files read without a decoder
``sources``     the file and line of each row of a local file (for error messages)
``load``        :func:`load_data`: a config to raw train/eval splits
``pipeline``    :class:`MultimodalDataset` / :class:`MultimodalIterableDataset` (preprocess in
                DataLoader workers) and :class:`MultimodalCollator` (the batch layout)
``validation``  :func:`validate_dataset`: fail fast before training
==============  ========================================================================

In the order the training loop uses them: :func:`load_data` gives raw ``datasets`` splits,
:func:`validate_dataset` checks one, :func:`as_torch_dataset` wraps it so that rows go through
``adapter.preprocess``, and :class:`MultimodalCollator` builds model batches.
"""

from mmvq.data.config import DataConfig, DataError
from mmvq.data.load import load_data
from mmvq.data.pipeline import (
    Example,
    ModelBatch,
    MultimodalCollator,
    MultimodalDataset,
    MultimodalIterableDataset,
    as_torch_dataset,
)
from mmvq.data.validation import DatasetSummary, good_rows, validate_dataset

__all__ = [
    "DataConfig",
    "DataError",
    "DatasetSummary",
    "Example",
    "ModelBatch",
    "MultimodalCollator",
    "MultimodalDataset",
    "MultimodalIterableDataset",
    "as_torch_dataset",
    "good_rows",
    "load_data",
    "validate_dataset",
]
