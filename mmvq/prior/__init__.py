"""Stage 2 of mmvq: a prior over the shared codes (issue 10).

* :class:`MultimodalTokenizer` (:mod:`mmvq.prior.tokenizer`): examples / codes <-> one id
  sequence ``[bos] <m1> codes… </m1> <m2> codes… </m2> [eos]``; an LM-vocabulary mode appends
  the codes after an existing HF tokenizer's vocabulary.
* :class:`ConstrainedLogitsProcessor` (:mod:`mmvq.prior.grammar`): only valid ids in
  ``generate()``.
* :class:`MultimodalPrior` / :class:`PriorConfig` (:mod:`mmvq.prior.model`): a transformers
  causal LM over those ids, saved with safetensors; generation through HF ``generate()``
  (:mod:`mmvq.prior.generation`).
* :func:`train_prior` (:mod:`mmvq.prior.train`): Accelerate training on codes pre-computed with
  ``datasets.map`` (:mod:`mmvq.prior.data`).
* :mod:`mmvq.prior.metrics`: code-level generation metrics (the shapes data's image and caption
  metrics are :mod:`mmvq_adapters.shapes.generation_metrics`).

Only :mod:`mmvq.prior.glue` talks to :class:`mmvq.MultimodalVQ`. ``import mmvq`` does not import
this package (nor ``transformers``); ``import mmvq.prior`` does.
"""

from mmvq.prior.data import PriorCollator, encode_dataset
from mmvq.prior.generation import PriorGenerationOutput, PriorSamplingConfig
from mmvq.prior.grammar import (
    ConstrainedLogitsProcessor,
    MalformedSequenceError,
    SequenceGrammar,
    parse_sequence,
)
from mmvq.prior.model import MultimodalPrior, PriorConfig
from mmvq.prior.tokenizer import DecodedCodes, MultimodalTokenizer
from mmvq.prior.train import PriorTrainResult, train_prior
from mmvq.prior.train_config import PriorTrainConfig
from mmvq.prior.vocab import PriorVocabulary, SpanSpec

__all__ = [
    "ConstrainedLogitsProcessor",
    "DecodedCodes",
    "MalformedSequenceError",
    "MultimodalPrior",
    "MultimodalTokenizer",
    "PriorCollator",
    "PriorConfig",
    "PriorGenerationOutput",
    "PriorSamplingConfig",
    "PriorTrainConfig",
    "PriorTrainResult",
    "PriorVocabulary",
    "SequenceGrammar",
    "SpanSpec",
    "encode_dataset",
    "parse_sequence",
    "train_prior",
]
