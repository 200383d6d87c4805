"""The adapter registry: the ONLY way an adapter name resolves to a class.

Configs (and Hub checkpoints) store adapter *names*, never import paths. A name resolves to a
:class:`~mmvq.adapter.ModalityAdapter` subclass through one of two sources:

* **code**: ``register_adapter("name", cls)`` (or ``@register_adapter("name")`` on the class);
* **entry points** of the group ``mmvq.adapters`` declared by installed distributions, e.g. in a
  plugin's ``pyproject.toml``::

      [project.entry-points."mmvq.adapters"]
      vector = "mmvq_vector.adapter:VectorAdapter"

  mmvq's own image/text/audio adapters arrive the same way.

Entry points are discovered lazily, on the first lookup (``import mmvq`` reads no metadata), and
each one is imported only when its name is requested. An entry point that fails to import (or
that does not name an adapter class) raises :class:`AdapterPluginError` only when *that* name is
requested; every other adapter keeps working. ``MMVQ_DISABLE_PLUGIN_AUTOLOAD=1`` turns entry-point
discovery off (only code registrations are visible).

Precedence between the two sources (one shared namespace):

1. A name registered in code wins: ``get_adapter(name)`` returns the code-registered class and
   never imports the entry point of the same name. If that class is not the one the entry point
   names, a :class:`UserWarning` says which entry point is shadowed (once per name), and
   :func:`adapter_info` lists it in ``shadows``.
2. Registering in code the very class an entry point names (e.g. a plugin module that decorates
   its own class, imported directly) is not a conflict: the name keeps the entry point's
   distribution and version.
3. Two code registrations of one name with different classes are refused unless
   ``exist_ok=True`` (the later one then replaces the earlier). Registering the same class again
   (or a class of the same module and qualified name, as after a module reload) is a no-op
   replacement, never an error.
4. Two installed distributions declaring one name with different targets make that name
   ambiguous: requesting it raises :class:`AdapterPluginError` naming both, until one is
   uninstalled or the wanted class is registered in code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from mmvq.adapter import ModalityAdapter
from mmvq.registry.adapter_registry import AdapterRegistry
from mmvq.registry.entry_points import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    REGISTERED_IN_CODE,
    AdapterInfo,
    autoload_disabled,
)
from mmvq.registry.errors import (
    AdapterPluginError,
    AdapterRegistryError,
    DuplicateAdapterError,
    InvalidAdapterError,
    UnknownAdapterError,
)

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "REGISTERED_IN_CODE",
    "AdapterInfo",
    "AdapterPluginError",
    "AdapterRegistry",
    "AdapterRegistryError",
    "DuplicateAdapterError",
    "InvalidAdapterError",
    "UnknownAdapterError",
    "adapter_info",
    "adapter_infos",
    "adapter_name",
    "autoload_disabled",
    "default_registry",
    "get_adapter",
    "list_adapters",
    "refresh_entry_points",
    "register_adapter",
    "unregister_adapter",
]

A = TypeVar("A", bound=type[ModalityAdapter])


_DEFAULT = AdapterRegistry()


def default_registry() -> AdapterRegistry:
    """The process-wide registry the module-level functions use."""
    return _DEFAULT


@overload
def register_adapter(
    name: str, cls: None = None, *, exist_ok: bool = False
) -> Callable[[A], A]: ...


@overload
def register_adapter(name: str, cls: A, *, exist_ok: bool = False) -> A: ...


def register_adapter(name: str, cls: A | None = None, *, exist_ok: bool = False) -> Any:
    """Register an adapter class under ``name``, as a call or a class decorator.

    ::

        @register_adapter("vector")
        class VectorAdapter(ModalityAdapter): ...

        register_adapter("vector", VectorAdapter)

    Sets ``cls.registered_name``. See :class:`AdapterRegistry.register` for the errors.
    """
    return _DEFAULT.register(name, cls, exist_ok=exist_ok)


def unregister_adapter(name: str) -> type[ModalityAdapter]:
    """Remove a name registered in code; returns its class."""
    return _DEFAULT.unregister(name)


def get_adapter(name: str, *, distribution_hint: str | None = None) -> type[ModalityAdapter]:
    """The adapter class registered under ``name`` (see :meth:`AdapterRegistry.get`)."""
    return _DEFAULT.get(name, distribution_hint=distribution_hint)


def list_adapters(pattern: str | None = None) -> list[str]:
    """Sorted adapter names (code + entry points), optionally filtered by an fnmatch pattern."""
    return _DEFAULT.names(pattern)


def adapter_info(name: str) -> AdapterInfo:
    """Name, class, distribution, version and source of one adapter (loads it)."""
    return _DEFAULT.info(name)


def adapter_infos(pattern: str | None = None, *, load: bool = True) -> list[AdapterInfo]:
    """:class:`AdapterInfo` of every adapter; broken plugins appear with ``error`` set."""
    return _DEFAULT.infos(pattern, load=load)


def adapter_name(adapter: ModalityAdapter | type[ModalityAdapter]) -> str:
    """The registered name of an adapter class or instance (what a saved config records)."""
    return _DEFAULT.name_of(adapter)


def refresh_entry_points() -> None:
    """Re-read entry points on the next lookup (after installing a plugin at runtime)."""
    _DEFAULT.refresh_entry_points()
