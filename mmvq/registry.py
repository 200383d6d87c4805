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

import difflib
import fnmatch
import inspect
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar, overload

from mmvq.adapter import ModalityAdapter

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

ENTRY_POINT_GROUP = "mmvq.adapters"
"""The entry-point group through which installed distributions provide adapters."""

DISABLE_AUTOLOAD_ENV = "MMVQ_DISABLE_PLUGIN_AUTOLOAD"
"""Set to ``1`` (or ``true``/``yes``/``on``) to turn entry-point discovery off."""

REGISTERED_IN_CODE = "registered in code"
""":attr:`AdapterInfo.source` of an adapter registered with :func:`register_adapter`."""

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_FALSE_VALUES = {"", "0", "false", "no", "off"}

A = TypeVar("A", bound=type[ModalityAdapter])


# --------------------------------------------------------------------------- errors
class AdapterRegistryError(Exception):
    """Base class of the registry's errors (other than :class:`UnknownAdapterError`)."""


class InvalidAdapterError(AdapterRegistryError, TypeError):
    """A registration (or an entry point) names something that is not a usable adapter class."""


class DuplicateAdapterError(AdapterRegistryError, ValueError):
    """A name is already registered in code for another class."""


class AdapterPluginError(AdapterRegistryError, RuntimeError):
    """An entry point of group ``mmvq.adapters`` could not provide its adapter.

    Attributes:
        name: the adapter name (the entry point's name).
        value: the entry point's value, ``"module:attr"`` (several, ``"; "``-joined, when
            distributions conflict).
        distribution: the providing distribution's name, if known.
        version: that distribution's version, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str,
        value: str,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.value = value
        self.distribution = distribution
        self.version = version

    def copy(self) -> AdapterPluginError:
        """A fresh instance with the same message and fields (to re-raise a cached failure)."""
        return AdapterPluginError(
            str(self),
            name=self.name,
            value=self.value,
            distribution=self.distribution,
            version=self.version,
        )


class UnknownAdapterError(KeyError):
    """No adapter is registered (in code or through an entry point) under the requested name.

    A :class:`KeyError` so that ``except KeyError`` works; unlike a plain ``KeyError`` its
    ``str()`` is the readable message.
    """

    def __init__(
        self, message: str, *, name: str, known: list[str], suggestion: str | None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.known = known
        self.suggestion = suggestion

    def __str__(self) -> str:
        return self.message


# ----------------------------------------------------------------------------- info
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
class _Registration:
    cls: type[ModalityAdapter]
    # Set when the class is the one an entry point names (provenance of that entry point).
    entry_point: metadata.EntryPoint | None = None


@dataclass
class _EntryPointSlot:
    """The entry points declaring one name, and what loading them gave."""

    name: str
    entry_points: list[metadata.EntryPoint] = field(default_factory=list)
    cls: type[ModalityAdapter] | None = None
    error: AdapterPluginError | None = None


# ------------------------------------------------------------------------- helpers
def autoload_disabled() -> bool:
    """Whether ``MMVQ_DISABLE_PLUGIN_AUTOLOAD`` turns entry-point discovery off."""
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in _FALSE_VALUES


def _name_problem(name: object, what: str = "adapter name") -> str | None:
    """Why ``name`` is not a valid adapter name, or ``None`` when it is."""
    if not isinstance(name, str):
        return f"{what} must be a str, got {type(name).__name__} {name!r}"
    if _NAME_RE.match(name):
        return None
    if not name:
        return f"{what} must be non-empty; use a short lowercase name such as 'image'."
    if any(c in name for c in ".:/\\"):
        return (
            f"{what} {name!r} looks like an import path; mmvq never imports by path. Register "
            "the class under a plain name (mmvq.register_adapter('myname', cls) or an entry point "
            f"in group {ENTRY_POINT_GROUP!r}) and use that name."
        )
    fixed = re.sub(r"[^a-z0-9_-]+", "_", name.strip().lower()).strip("_-")[:64]
    hint = f" such as {fixed!r}" if fixed and _NAME_RE.match(fixed) else ""
    return (
        f"invalid {what} {name!r}: use 1-64 characters of lowercase letters, digits, '_' or '-', "
        f"starting with a letter or digit{hint}."
    )


def _check_name(name: object, what: str = "adapter name") -> str:
    problem = _name_problem(name, what)
    if problem is None:
        return name  # type: ignore[return-value]
    raise (TypeError if not isinstance(name, str) else ValueError)(problem)


def _dist_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.metadata["Name"] or getattr(dist, "name", None), dist.version
    except Exception:  # noqa: BLE001  # pragma: no cover - malformed metadata
        return None, None


def _ep_label(ep: metadata.EntryPoint) -> str:
    dist, version = _dist_of(ep)
    where = f"distribution {dist} {version}" if dist else "an unknown distribution"
    return f"{ep.name} = {ep.value} ({where})"


def _class_matches_entry_point(cls: type, ep: metadata.EntryPoint) -> bool:
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


def _distribution_of_module(module_name: str) -> tuple[str | None, str | None]:
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


def _check_adapter_class(obj: object, where: str) -> type[ModalityAdapter]:
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


# ------------------------------------------------------------------------ registry
class AdapterRegistry:
    """A namespace of adapter names (see the module docstring for the rules).

    The module-level functions (:func:`register_adapter`, :func:`get_adapter`, ...) use one
    process-wide instance, :func:`default_registry`. A separate instance is useful to isolate
    tests or to read a different entry-point group.

    Args:
        group: the entry-point group to discover.
        autoload: ``True``/``False`` to force entry-point discovery on/off; ``None`` (default)
            follows ``MMVQ_DISABLE_PLUGIN_AUTOLOAD`` at each lookup.
    """

    def __init__(self, group: str = ENTRY_POINT_GROUP, *, autoload: bool | None = None) -> None:
        self.group = group
        self.autoload = autoload
        self._lock = threading.RLock()
        self._code: dict[str, _Registration] = {}
        self._slots: dict[str, _EntryPointSlot] | None = None  # None: not discovered yet
        self._bad_names: list[metadata.EntryPoint] = []
        self._warned_shadow: set[str] = set()

    # -------------------------------------------------------------- registration
    @overload
    def register(
        self, name: str, cls: None = None, *, exist_ok: bool = False
    ) -> Callable[[A], A]: ...

    @overload
    def register(self, name: str, cls: A, *, exist_ok: bool = False) -> A: ...

    def register(self, name: str, cls: A | None = None, *, exist_ok: bool = False) -> Any:
        """Register ``cls`` under ``name``; without ``cls``, return a class decorator.

        Raises:
            ValueError: ``name`` is not a valid adapter name.
            InvalidAdapterError: ``cls`` is not a concrete ``ModalityAdapter`` subclass.
            DuplicateAdapterError: ``name`` is registered in code for another class and
                ``exist_ok`` is false.
        """
        _check_name(name)
        if cls is None:

            def decorator(klass: A) -> A:
                return self.register(name, klass, exist_ok=exist_ok)

            return decorator
        klass = _check_adapter_class(cls, f"register_adapter({name!r}, ...): the class")
        with self._lock:
            previous = self._code.get(name)
            if previous is not None and not exist_ok and not self._same_class(previous.cls, klass):
                raise DuplicateAdapterError(
                    f"adapter name {name!r} is already registered to "
                    f"{previous.cls.__module__}.{previous.cls.__qualname__}; refusing to register "
                    f"{klass.__module__}.{klass.__qualname__} under it. Pick another name, or pass "
                    "exist_ok=True to replace the earlier class."
                )
            self._code[name] = _Registration(klass)
            klass.registered_name = name
        return klass

    @staticmethod
    def _same_class(a: type, b: type) -> bool:
        return a is b or (a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__)

    def unregister(self, name: str) -> type[ModalityAdapter]:
        """Remove a code registration and return its class (entry points are not affected).

        Raises:
            UnknownAdapterError: nothing is registered in code under ``name``.
        """
        with self._lock:
            registration = self._code.pop(name, None)
        if registration is None:
            raise self._unknown(name, extra=" (unregister only removes names registered in code)")
        if registration.cls.__dict__.get("registered_name") == name:
            registration.cls.registered_name = None
        return registration.cls

    # ------------------------------------------------------------------ discovery
    def _autoload(self) -> bool:
        return (not autoload_disabled()) if self.autoload is None else self.autoload

    def _discovered(self) -> dict[str, _EntryPointSlot]:
        """The entry points of :attr:`group`, read from metadata on first use (no imports)."""
        if not self._autoload():
            return {}
        with self._lock:
            if self._slots is None:
                slots: dict[str, _EntryPointSlot] = {}
                bad: list[metadata.EntryPoint] = []
                for ep in metadata.entry_points(group=self.group):
                    if not _NAME_RE.match(ep.name):
                        bad.append(ep)
                        continue
                    slot = slots.setdefault(ep.name, _EntryPointSlot(ep.name))
                    # The same distribution seen twice on sys.path declares the same value.
                    if all(e.value != ep.value for e in slot.entry_points):
                        slot.entry_points.append(ep)
                self._slots = slots
                self._bad_names = bad
            return self._slots

    def refresh_entry_points(self) -> None:
        """Forget discovered entry points (and their load results); re-read on the next lookup.

        Use after installing a plugin into a running process. Classes already imported stay
        imported; code registrations are kept.
        """
        with self._lock:
            self._slots = None
            self._bad_names = []
            self._warned_shadow.clear()

    def _load_slot(self, slot: _EntryPointSlot) -> type[ModalityAdapter]:
        with self._lock:
            if slot.cls is not None:
                return slot.cls
            if slot.error is not None:
                raise slot.error.copy() from slot.error.__cause__
            try:
                slot.cls = self._load_entry_points(slot)
            except AdapterPluginError as exc:
                slot.error = exc
                raise
            return slot.cls

    def _load_entry_points(self, slot: _EntryPointSlot) -> type[ModalityAdapter]:
        if len(slot.entry_points) > 1:
            labels = "; ".join(_ep_label(ep) for ep in slot.entry_points)
            raise AdapterPluginError(
                f"adapter name {slot.name!r} is declared by {len(slot.entry_points)} entry points "
                f"of group {self.group!r}: {labels}. Uninstall all but one, or choose one in code "
                f"with mmvq.register_adapter({slot.name!r}, TheClass, exist_ok=True).",
                name=slot.name,
                value="; ".join(ep.value for ep in slot.entry_points),
            )
        ep = slot.entry_points[0]
        dist, version = _dist_of(ep)
        where = f"distribution {dist} {version}" if dist else "an unknown distribution"
        reinstall = f"pip install --force-reinstall {dist}" if dist else "reinstall the plugin"
        try:
            obj = ep.load()
        except Exception as exc:
            raise AdapterPluginError(
                f"adapter plugin {slot.name!r} failed to load: entry point "
                f"'{ep.name} = {ep.value}' (group {self.group!r}) from {where} raised "
                f"{type(exc).__name__}: {exc}. Fix or reinstall it ({reinstall}), or uninstall "
                "it; other adapters are unaffected.",
                name=slot.name,
                value=ep.value,
                distribution=dist,
                version=version,
            ) from exc
        try:
            klass = _check_adapter_class(
                obj, f"the object named by entry point '{ep.name} = {ep.value}'"
            )
        except InvalidAdapterError as exc:
            raise AdapterPluginError(
                f"adapter plugin {slot.name!r} is invalid: entry point '{ep.name} = {ep.value}' "
                f"(group {self.group!r}) from {where}: {exc} The entry point must name the "
                "adapter class as 'module:ClassName'.",
                name=slot.name,
                value=ep.value,
                distribution=dist,
                version=version,
            ) from exc
        if "registered_name" not in klass.__dict__ or klass.registered_name is None:
            klass.registered_name = slot.name
        return klass

    # -------------------------------------------------------------------- lookup
    def get(self, name: str, *, distribution_hint: str | None = None) -> type[ModalityAdapter]:
        """The adapter class registered under ``name``, importing its entry point if needed.

        Args:
            name: the adapter name.
            distribution_hint: the distribution known to provide ``name`` (e.g. recorded in a
                saved model's config); only used to word the error when the name is unknown.

        Raises:
            UnknownAdapterError: nothing provides ``name``.
            AdapterPluginError: the entry point for ``name`` fails to load or is invalid.
        """
        _check_name(name)
        slots = self._discovered()
        with self._lock:
            registration = self._code.get(name)
        if registration is not None:
            slot = slots.get(name)
            if slot is not None and self._matching_entry_point(registration, slot) is None:
                self._warn_shadow(name, registration.cls, slot)
            return registration.cls
        slot = slots.get(name)
        if slot is None:
            raise self._unknown(name, distribution_hint=distribution_hint)
        return self._load_slot(slot)

    @staticmethod
    def _matching_entry_point(
        registration: _Registration, slot: _EntryPointSlot | None
    ) -> metadata.EntryPoint | None:
        """The entry point naming the code-registered class itself, if any (cached)."""
        if registration.entry_point is None and slot is not None:
            registration.entry_point = next(
                (
                    ep
                    for ep in slot.entry_points
                    if _class_matches_entry_point(registration.cls, ep)
                ),
                None,
            )
        return registration.entry_point

    def _shadowed(self, cls: type, slot: _EntryPointSlot) -> list[metadata.EntryPoint]:
        return [ep for ep in slot.entry_points if not _class_matches_entry_point(cls, ep)]

    def _warn_shadow(self, name: str, cls: type, slot: _EntryPointSlot) -> None:
        shadowed = self._shadowed(cls, slot)
        if not shadowed or name in self._warned_shadow:
            return
        self._warned_shadow.add(name)
        labels = "; ".join(_ep_label(ep) for ep in shadowed)
        warnings.warn(
            f"adapter {name!r} resolves to {cls.__module__}.{cls.__qualname__} registered in "
            f"code, which shadows entry point {labels}. Register under another name to use both.",
            UserWarning,
            stacklevel=3,
        )

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted names from code and entry points (nothing is imported), optionally filtered.

        Args:
            pattern: an :mod:`fnmatch` pattern such as ``"im*"``.
        """
        if pattern is not None and not isinstance(pattern, str):
            raise TypeError(f"pattern must be an fnmatch pattern str or None, got {pattern!r}")
        slots = self._discovered()
        with self._lock:
            names = set(self._code) | set(slots)
        if pattern is not None:
            names = {n for n in names if fnmatch.fnmatchcase(n, pattern)}
        return sorted(names)

    def info(self, name: str) -> AdapterInfo:
        """Provenance of ``name`` (loads it; raises like :meth:`get` when it cannot)."""
        cls = self.get(name)
        return self._info(name, cls)

    def _info(self, name: str, cls: type[ModalityAdapter], error: str | None = None) -> AdapterInfo:
        slot = self._discovered().get(name)
        with self._lock:
            registration = self._code.get(name)
        if registration is None:
            assert slot is not None
            ep = slot.entry_points[0]
            dist, version = _dist_of(ep)
            return AdapterInfo(name, cls, dist, version, ep.value, error)
        shadows: tuple[str, ...] = ()
        matching = self._matching_entry_point(registration, slot)
        if matching is not None:
            dist, version = _dist_of(matching)
            return AdapterInfo(name, cls, dist, version, matching.value)
        if slot is not None:
            shadows = tuple(_ep_label(ep) for ep in self._shadowed(cls, slot))
        dist, version = _distribution_of_module(cls.__module__)
        return AdapterInfo(name, cls, dist, version, REGISTERED_IN_CODE, None, shadows)

    def infos(self, pattern: str | None = None, *, load: bool = True) -> list[AdapterInfo]:
        """One :class:`AdapterInfo` per name; never raises for a broken plugin.

        Args:
            pattern: an :mod:`fnmatch` pattern.
            load: import entry points to report whether they work (``False``: report what the
                metadata declares, with ``cls=None`` for entry points not yet imported).
        """
        rows = []
        for name in self.names(pattern):
            slot = self._discovered().get(name)
            with self._lock:
                in_code = name in self._code
            if in_code or (slot is not None and slot.cls is not None):
                rows.append(self.info(name))
                continue
            assert slot is not None
            if not load:
                ep = slot.entry_points[0]
                dist, version = _dist_of(ep)
                rows.append(AdapterInfo(name, None, dist, version, ep.value, None))
                continue
            try:
                rows.append(self.info(name))
            except AdapterPluginError as exc:
                rows.append(
                    AdapterInfo(name, None, exc.distribution, exc.version, exc.value, str(exc))
                )
        for ep in self._bad_names if self._autoload() else []:
            if pattern is None or fnmatch.fnmatchcase(ep.name, pattern):
                dist, version = _dist_of(ep)
                reason = _name_problem(ep.name, "entry point name") or "invalid name"
                rows.append(AdapterInfo(ep.name, None, dist, version, ep.value, reason))
        return rows

    def name_of(self, adapter: ModalityAdapter | type[ModalityAdapter]) -> str:
        """The name under which ``adapter`` (a class or instance) resolves to exactly its class.

        What a saved model should record: the class must be registered itself (a subclass of a
        registered class inherits ``registered_name`` but is not what that name resolves to).

        Raises:
            InvalidAdapterError: ``adapter`` is not an adapter.
            AdapterRegistryError: the class is not registered under any name.
        """
        cls = adapter if inspect.isclass(adapter) else type(adapter)
        _check_adapter_class(cls, "adapter_name(...): the adapter")
        # Candidates: the name the class was registered under, code registrations of the class,
        # and entry points naming it (e.g. a built-in imported directly, never looked up).
        candidates = [cls.__dict__.get("registered_name")]
        with self._lock:
            candidates += [n for n, r in self._code.items() if r.cls is cls]
        slots = self._discovered()
        candidates += [
            n
            for n, slot in slots.items()
            if any(_class_matches_entry_point(cls, ep) for ep in slot.entry_points)
        ]
        for name in dict.fromkeys(c for c in candidates if c is not None):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a shadowing warning is not the point here
                    if self.get(name) is cls:
                        return name
            except (UnknownAdapterError, AdapterPluginError):
                continue
        raise AdapterRegistryError(
            f"{cls.__module__}.{cls.__qualname__} is not registered, so a saved model could not "
            "find it again; call mmvq.register_adapter('a-name', "
            f"{cls.__qualname__}) or provide it through an entry point of group {self.group!r}."
        )

    # ------------------------------------------------------------------- errors
    def _unknown(
        self, name: str, *, distribution_hint: str | None = None, extra: str = ""
    ) -> UnknownAdapterError:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        suggestion = close[0] if close else None
        parts = [f"unknown adapter {name!r}{extra}."]
        if suggestion:
            parts.append(f"Did you mean {suggestion!r}?")
        parts.append(f"Registered adapters: {', '.join(known) if known else '(none)'}.")
        if distribution_hint:
            parts.append(
                f"It is provided by the distribution {distribution_hint!r}: "
                f"pip install {distribution_hint}."
            )
        if not self._autoload():
            declared = [ep for ep in metadata.entry_points(group=self.group) if ep.name == name]
            off = (
                f"Plugin autoload is off ({DISABLE_AUTOLOAD_ENV} is set)"
                if self.autoload is None
                else "Plugin autoload is off for this registry"
            )
            if declared:
                parts.append(f"{off}; it would come from entry point {_ep_label(declared[0])}.")
            else:
                parts.append(f"{off}.")
        elif not distribution_hint:
            parts.append(
                "No installed distribution declares it: install the package that provides it "
                f"(plugins register through the {self.group!r} entry-point group) or call "
                f"mmvq.register_adapter({name!r}, YourAdapter)."
            )
        return UnknownAdapterError(" ".join(parts), name=name, known=known, suggestion=suggestion)


# ---------------------------------------------------------------- module-level API
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
