"""The ``mmvq`` command line (``mmvq ...``, ``python -m mmvq`` or ``python -m mmvq.cli``).

==============  ========================================================================
module          what it holds
==============  ========================================================================
``parser``      the subcommand table, :func:`main` and its one-line error policy, the
                ``--<modality>`` options
``models``      what the model commands share: MODEL, inputs, outputs
``adapters``    ``mmvq adapters``
``codes``       ``mmvq encode``, ``mmvq decode``, ``mmvq generate``
``evaluation``  ``mmvq eval``
``training``    ``mmvq train``
``hub``         ``mmvq push``
==============  ========================================================================

Importing this package registers every command (each module's :func:`subcommand` functions).
"""

from mmvq.cli import adapters, codes, evaluation, hub, training  # noqa: F401 - register commands
from mmvq.cli.parser import (
    EXIT_ERROR,
    ModalityOptions,
    Subcommand,
    build_parser,
    main,
    subcommand,
)

__all__ = ["EXIT_ERROR", "ModalityOptions", "Subcommand", "build_parser", "main", "subcommand"]
