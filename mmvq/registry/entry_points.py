"""What the adapter registry knows about entry points and names: valid adapter names, the
distribution behind an entry point, whether a class is the one an entry point names, and the
records it keeps (:class:`AdapterInfo` is what ``mmvq adapters`` prints and a saved model
records)."""

from __future__ import annotations

import inspect
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from mmvq.adapter import ModalityAdapter
from mmvq.registry.errors import AdapterPluginError, InvalidAdapterError

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "NAME_RE",
    "REGISTERED_IN_CODE",
    "AdapterInfo",
    "EntryPointSlot",
    "Registration",
    "autoload_disabled",
    "check_adapter_class",
    "check_name",
    "class_matches_entry_point",
    "dist_of",
    "distribution_of_module",
    "ep_label",
    "name_problem",
]

ENTRY_POINT_GROUP = "mmvq.adapters"
"""The entry-point group through which installed distributions provide adapters."""

DISABLE_AUTOLOAD_ENV = "MMVQ_DISABLE_PLUGIN_AUTOLOAD"
"""Set to ``1`` (or ``true``/``yes``/``on``) to turn entry-point discovery off."""

REGISTERED_IN_CODE = "registered in code"
""":attr:`AdapterInfo.source` of an adapter registered with :func:`register_adapter`."""

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_FALSE_VALUES = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class AdapterInfo:
    """Where an adapter comes from; what ``mmvq adapters`` prints and the Hub config records.

    Attributes:
        name: the registered name.
        cls: the adapter class; ``None`` only in :func:`adapter_infos` rows of broken plugins
            (then ``error`` says why).
        distribution: the installed distribution that provides it, or ``None`` (e.g. a class
            defined in a script or a test).
        version: that distribution's version, or ``None``.
        source: the entry point's value (``"module:attr"``) or :data:`REGISTERED_IN_CODE`.
        error: for a broken plugin, the one-line reason; ``None`` when the class loaded.
        shadows: entry points (``"name = module:attr (dist version)"``) that a code registration
            of the same name hides.
    """

    name: str
    cls: type[ModalityAdapter] | None
    distribution: str | None
    version: str | None
    source: str
    error: str | None = None
    shadows: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the adapter class is available."""
        return self.cls is not None and self.error is None

    @property
    def class_path(self) -> str | None:
        """``module:QualName`` of the class (for display only; never used to import)."""
        if self.cls is None:
            return None
        return f"{self.cls.__module__}:{self.cls.__qualname__}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the class as its display path)."""
        return {
            "name": self.name,
            "class": self.class_path,
            "distribution": self.distribution,
            "version": self.version,
            "source": self.source,
            "error": self.error,
            "shadows": list(self.shadows),
        }


@dataclass
class Registration:
    cls: type[ModalityAdapter]
    # Set when the class is the one an entry point names (provenance of that entry point).
    entry_point: metadata.EntryPoint | None = None


@dataclass
class EntryPointSlot:
    """The entry points declaring one name, and what loading them gave."""

    name: str
    entry_points: list[metadata.EntryPoint] = field(default_factory=list)
    cls: type[ModalityAdapter] | None = None
    error: AdapterPluginError | None = None


def autoload_disabled() -> bool:
    """Whether ``MMVQ_DISABLE_PLUGIN_AUTOLOAD`` turns entry-point discovery off."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in _FALSE_VALUES


def name_problem(name: object, what: str = "adapter name") -> str | None:
    """Why ``name`` is not a valid adapter name, or ``None`` when it is."""
    if not isinstance(name, str):
        return f"{what} must be a str, got {type(name).__name__} {name!r}"
    if NAME_RE.match(name):
        return None
    if not name:
        return f"{what} must be non-empty; use a short lowercase name such as 'depth'."
    if any(c in name for c in ".:/\\"):
        return (
            f"{what} {name!r} looks like an import path; mmvq never imports by path. Register "
            "the class under a plain name (mmvq.register_adapter('myname', cls) or an entry point "
            f"in group {ENTRY_POINT_GROUP!r}) and use that name."
        )
    fixed = re.sub(r"[^a-z0-9_-]+", "_", name.strip().lower()).strip("_-")[:64]
    hint = f" such as {fixed!r}" if fixed and NAME_RE.match(fixed) else ""
    return (
        f"invalid {what} {name!r}: use 1-64 characters of lowercase letters, digits, '_' or '-', "
        f"starting with a letter or digit{hint}."
    )


def check_name(name: object, what: str = "adapter name") -> str:
    problem = name_problem(name, what)
    if problem is None:
        return name  # type: ignore[return-value]
    raise (TypeError if not isinstance(name, str) else ValueError)(problem)


def dist_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.metadata["Name"] or getattr(dist, "name", None), dist.version
    except Exception:  # noqa: BLE001  # pragma: no cover - malformed metadata
        return None, None


def ep_label(ep: metadata.EntryPoint) -> str:
    dist, version = dist_of(ep)
    where = f"distribution {dist} {version}" if dist else "an unknown distribution"
    return f"{ep.name} = {ep.value} ({where})"


def class_matches_entry_point(cls: type, ep: metadata.EntryPoint) -> bool:
    """Whether ``cls`` is the object ``ep`` names, decided without importing anything new."""
    module = sys.modules.get(ep.module)
    if module is not None and ep.attr:
        obj: Any = module
        try:
            for part in ep.attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            obj = None
        if obj is cls:
            return True
    return cls.__module__ == ep.module and cls.__qualname__ == ep.attr


def distribution_of_module(module_name: str) -> tuple[str | None, str | None]:
    top = module_name.split(".", 1)[0]
    try:
        dists = metadata.packages_distributions().get(top) or []
    except Exception:  # noqa: BLE001  # pragma: no cover - broken metadata on sys.path
        return None, None
    if not dists:
        return None, None
    name = dists[0]
    try:
        return name, metadata.version(name)
    except metadata.PackageNotFoundError:  # pragma: no cover
        return name, None


def check_adapter_class(obj: object, where: str) -> type[ModalityAdapter]:
    if not (inspect.isclass(obj) and issubclass(obj, ModalityAdapter)):
        if isinstance(obj, ModalityAdapter):
            got = f"an instance of {type(obj).__name__}, not the class"
            fix = "pass the class itself"
        else:
            got = f"{obj!r} ({type(obj).__name__})"
            fix = "pass a subclass of mmvq.ModalityAdapter"
        raise InvalidAdapterError(
            f"{where} must be a subclass of mmvq.ModalityAdapter, got {got}; {fix}."
        )
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise InvalidAdapterError(
            f"{where} {obj.__qualname__} is abstract (missing: {missing}); implement those "
            "methods before registering it."
        )
    return obj
