"""mmvq's logging: one library logger, ``mmvq``, visible at INFO by default, main process only.

Every module logs through :func:`get_logger`, which wraps ``accelerate.logging.get_logger``: a
record is emitted on the main process only unless ``main_process_only=False`` is passed
(accelerate's semantics). Before any ``Accelerator``/``PartialState`` exists (the CLI loading a
model, the data layer called on its own), the process rank comes from the launcher's ``RANK``
variable instead of accelerate refusing to log.

The ``mmvq`` logger has its own handler (stderr, resolved when a record is written, so captured
streams work) and does not propagate to the root logger, so a script's own ``logging.basicConfig``
does not print mmvq's records twice. Its level is, in order: :func:`set_verbosity`, the
``MMVQ_VERBOSITY`` environment variable (``debug``, ``info``, ``warning``, ``error``, ``critical``,
read on first use), INFO::

    import mmvq
    mmvq.set_verbosity("warning")      # or MMVQ_VERBOSITY=warning python recipes/...
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from accelerate.logging import MultiProcessAdapter
from accelerate.logging import get_logger as _accelerate_logger

__all__ = [
    "ENV_VERBOSITY",
    "LIBRARY_LOGGER",
    "LEVELS",
    "get_logger",
    "get_verbosity",
    "set_propagation",
    "set_verbosity",
]

LIBRARY_LOGGER = "mmvq"
ENV_VERBOSITY = "MMVQ_VERBOSITY"
DEFAULT_LEVEL = logging.INFO
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
"""Names :func:`set_verbosity` and ``MMVQ_VERBOSITY`` accept (case-insensitive)."""

_lock = threading.Lock()
_handler: logging.Handler | None = None


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to the *current* ``sys.stderr`` (replaced by test capture,
    notebooks and tqdm redirection after mmvq was imported)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def _level(value: int | str, source: str) -> int:
    """The logging level ``value`` names; ``ValueError`` naming ``source`` and the choices."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int):
        if value in LEVELS.values():
            return value
    elif isinstance(value, str) and value.strip().lower() in LEVELS:
        return LEVELS[value.strip().lower()]
    raise ValueError(
        f"{source}={value!r} is not a verbosity; use one of {list(LEVELS)} (or the logging "
        "module's DEBUG/INFO/WARNING/ERROR/CRITICAL)"
    )


def _configure() -> logging.Logger:
    """The ``mmvq`` logger, given its handler and level once."""
    global _handler
    library = logging.getLogger(LIBRARY_LOGGER)
    if _handler is not None:
        return library
    with _lock:
        if _handler is not None:
            return library
        handler = _StderrHandler()
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
        library.addHandler(handler)
        library.propagate = False
        level = DEFAULT_LEVEL
        env = os.environ.get(ENV_VERBOSITY)
        bad_env = None
        if env:
            try:
                level = _level(env, ENV_VERBOSITY)
            except ValueError as exc:
                bad_env = str(exc)
        library.setLevel(level)
        _handler = handler
    if bad_env:
        library.warning("%s; using info", bad_env)
    return library


def _env_is_main_process() -> bool:
    """Whether this process is rank 0 by the launcher's environment (no accelerate state yet)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


class MmvqLogAdapter(MultiProcessAdapter):
    """accelerate's :class:`~accelerate.logging.MultiProcessAdapter` that also works before an
    ``Accelerator`` exists (the rank then comes from ``RANK``)."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        from accelerate.state import PartialState

        if PartialState._shared_state:
            super().log(level, msg, *args, **kwargs)
            return
        main_process_only = kwargs.pop("main_process_only", True)
        kwargs.pop("in_order", None)
        if self.isEnabledFor(level) and (not main_process_only or _env_is_main_process()):
            kwargs.setdefault("stacklevel", 2)
            self.logger.log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        """No ``[RANK n]`` prefix on the main process's records (the usual, single-process case)."""
        from accelerate.state import PartialState

        state = PartialState()
        kwargs.setdefault("stacklevel", 2)
        if state.num_processes > 1:
            msg = f"[RANK {state.process_index}] {msg}"
        return msg, kwargs


def get_logger(name: str) -> MmvqLogAdapter:
    """The logger of module ``name`` (a child of ``mmvq``), through accelerate's ``get_logger``."""
    _configure()
    return MmvqLogAdapter(_accelerate_logger(name).logger, {})


def set_verbosity(level: int | str) -> None:
    """Set how much mmvq logs: ``"debug"``, ``"info"`` (the default), ``"warning"``, ``"error"``,
    ``"critical"``, or a ``logging`` level.

    Raises:
        ValueError: ``level`` is not one of those.
    """
    _configure().setLevel(_level(level, "set_verbosity(level)"))


def get_verbosity() -> int:
    """The ``mmvq`` logger's current level (a ``logging`` level, e.g. ``logging.INFO``)."""
    return _configure().getEffectiveLevel()


def set_propagation(enabled: bool) -> None:
    """Also pass mmvq's records to the root logger (e.g. for ``pytest``'s ``caplog`` or an
    application's own handlers); off by default so that records are not printed twice."""
    _configure().propagate = bool(enabled)
