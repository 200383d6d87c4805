"""One vector-quantized codebook shared by every modality: :class:`SharedCodebook`.

==================  =====================================================================
module              what it holds
==================  =====================================================================
``config``          :class:`CodebookConfig` (validated options)
``codebook``        :class:`SharedCodebook` (state, lookup/embed/distances, forward) and
                    :class:`QuantizerOutput`
``kernel``          fp32 chunked nearest-code search, straight-through and rotation trick
``ema``             modality-weighted all-reduced statistics, EMA update, k-means init
``restarts``        per-modality reservoirs and dead-code restarts
``validation``      the forward's input checks
``stats``           usage, perplexity, overlap and paired agreement of codes
==================  =====================================================================
"""

from mmvq.quantize.codebook import QuantizerOutput, SharedCodebook
from mmvq.quantize.config import CodebookConfig
from mmvq.quantize.kernel import lookup_workspace_bytes

__all__ = ["CodebookConfig", "QuantizerOutput", "SharedCodebook", "lookup_workspace_bytes"]
