"""Saving, loading and pushing a :class:`~mmvq.MultimodalVQ` through the Hugging Face Hub.

===============  =======================================================================
module           what it holds
===============  =======================================================================
``mixin``        :class:`MultimodalVQHubMixin` (``save_pretrained``, ``from_pretrained``,
                 ``push_to_hub``) and :func:`resolve_model_dir` (a directory or a Hub repo)
``format``       the on-disk format of a saved model: ``config.json``, ``model.safetensors``,
                 ``adapters/<modality>/``; :class:`PretrainedError`
``model_card``   the model card (the repo's ``README.md``): metadata, ``model-index``, body
``card_inputs``  what the card is made from (metrics, sample grid, training data, license),
                 checked, kept in a saved directory and read back
``loading``      ``from_pretrained``'s dtype, device, subfolder and strict arguments
``errors``       network and authentication failures of Hub calls, as one clear line
``safety``       no code from a model repo: the data file types a download fetches, checks
``transfer``     a repo's snapshot (data files only, a repo with code refused) and a
                 one-commit upload of a saved folder; also used for the prior's ``prior/``
===============  =======================================================================

The mixin builds a model through the class it is mixed into (``cls.config_class`` for the
config), so nothing here imports :mod:`mmvq.model`.
"""

from mmvq.hub.errors import HubAccessError
from mmvq.hub.format import PretrainedError, PretrainedNotFoundError
from mmvq.hub.mixin import DOWNLOAD_PATTERNS, MultimodalVQHubMixin, resolve_model_dir

__all__ = [
    "DOWNLOAD_PATTERNS",
    "HubAccessError",
    "MultimodalVQHubMixin",
    "PretrainedError",
    "PretrainedNotFoundError",
    "resolve_model_dir",
]
