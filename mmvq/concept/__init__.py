"""The concept level: a few codes per sample that paired modalities agree on.

Each modality's tokens are summarised by ``S`` learned queries (:class:`ConceptSummariser`, one
module for every modality) into concept tokens, quantised in a concept codebook that every
modality shares (:class:`ConceptLevel`), and trained so that an image and its caption pick the
same concept codes (:mod:`mmvq.concept.losses`). The detail codes (one per adapter token) keep
what the concepts do not; the fusion decoder sees both levels.

* :class:`ConceptConfig`: the options (``MultimodalVQConfig.concept``).
* :class:`MultimodalCodes`, :class:`CodeSpan`: the two-level codes and their layout.
* :func:`concept_similarity`, :func:`retrieve`: cross-modal retrieval by codes.
* :class:`RetrievalAccumulator`: ``retrieval_r1_<a>_to_<b>`` over an evaluation set.
"""

from mmvq.concept.codes import LEVELS, CodeSpan, MultimodalCodes, concept_similarity, retrieve
from mmvq.concept.config import ConceptConfig
from mmvq.concept.level import ConceptLevel, ConceptOutput, concept_stream
from mmvq.concept.retrieval import RetrievalAccumulator
from mmvq.concept.summariser import ConceptSummariser

__all__ = [
    "LEVELS",
    "CodeSpan",
    "ConceptConfig",
    "ConceptLevel",
    "ConceptOutput",
    "ConceptSummariser",
    "MultimodalCodes",
    "RetrievalAccumulator",
    "concept_similarity",
    "concept_stream",
    "retrieve",
]
