"""Helpers the whole core shares: argument checks, config parsing, batch plumbing, collectives.

Nothing here knows a modality, a model or a training run: ``checks`` (one helper per argument
check), ``configs`` (dataclass configs: unknown keys, presets, the one ``JSON or key=value``
parser), ``batches`` (the batch size, rows and device of a nested batch), ``metrics`` (flattening
nested metric dicts) and ``distributed`` (collectives that are no-ops outside a process group).
"""
