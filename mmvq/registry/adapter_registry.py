"""`AdapterRegistry`: one namespace of adapter names, from code registrations and entry points
(the rules of precedence are in :mod:`mmvq.registry`'s docstring)."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import threading
import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar, overload

from mmvq.adapter import ModalityAdapter
from mmvq.registry.entry_points import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    NAME_RE,
    REGISTERED_IN_CODE,
    AdapterInfo,
    EntryPointSlot,
    Registration,
    autoload_disabled,
    check_adapter_class,
    check_name,
    class_matches_entry_point,
    dist_of,
    distribution_of_module,
    ep_label,
    name_problem,
)
from mmvq.registry.errors import (
    AdapterPluginError,
    AdapterRegistryError,
    DuplicateAdapterError,
    InvalidAdapterError,
    UnknownAdapterError,
)

__all__ = ["AdapterRegistry"]

A = TypeVar("A", bound=type[ModalityAdapter])


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
        self._code: dict[str, Registration] = {}
        self._slots: dict[str, EntryPointSlot] | None = None  # None: not discovered yet
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
        check_name(name)
        if cls is None:

            def decorator(klass: A) -> A:
                return self.register(name, klass, exist_ok=exist_ok)

            return decorator
        klass = check_adapter_class(cls, f"register_adapter({name!r}, ...): the class")
        with self._lock:
            previous = self._code.get(name)
            if previous is not None and not exist_ok and not self._same_class(previous.cls, klass):
                raise DuplicateAdapterError(
                    f"adapter name {name!r} is already registered to "
                    f"{previous.cls.__module__}.{previous.cls.__qualname__}; refusing to register "
                    f"{klass.__module__}.{klass.__qualname__} under it. Pick another name, or pass "
                    "exist_ok=True to replace the earlier class."
                )
            self._code[name] = Registration(klass)
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

    def _discovered(self) -> dict[str, EntryPointSlot]:
        """The entry points of :attr:`group`, read from metadata on first use (no imports)."""
        if not self._autoload():
            return {}
        with self._lock:
            if self._slots is None:
                slots: dict[str, EntryPointSlot] = {}
                bad: list[metadata.EntryPoint] = []
                for ep in metadata.entry_points(group=self.group):
                    if not NAME_RE.match(ep.name):
                        bad.append(ep)
                        continue
                    slot = slots.setdefault(ep.name, EntryPointSlot(ep.name))
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

    def _load_slot(self, slot: EntryPointSlot) -> type[ModalityAdapter]:
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

    def _load_entry_points(self, slot: EntryPointSlot) -> type[ModalityAdapter]:
        if len(slot.entry_points) > 1:
            labels = "; ".join(ep_label(ep) for ep in slot.entry_points)
            raise AdapterPluginError(
                f"adapter name {slot.name!r} is declared by {len(slot.entry_points)} entry points "
                f"of group {self.group!r}: {labels}. Uninstall all but one, or choose one in code "
                f"with mmvq.register_adapter({slot.name!r}, TheClass, exist_ok=True).",
                name=slot.name,
                value="; ".join(ep.value for ep in slot.entry_points),
            )
        ep = slot.entry_points[0]
        dist, version = dist_of(ep)
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
            klass = check_adapter_class(
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
        check_name(name)
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
        registration: Registration, slot: EntryPointSlot | None
    ) -> metadata.EntryPoint | None:
        """The entry point naming the code-registered class itself, if any (cached)."""
        if registration.entry_point is None and slot is not None:
            registration.entry_point = next(
                (ep for ep in slot.entry_points if class_matches_entry_point(registration.cls, ep)),
                None,
            )
        return registration.entry_point

    def _shadowed(self, cls: type, slot: EntryPointSlot) -> list[metadata.EntryPoint]:
        return [ep for ep in slot.entry_points if not class_matches_entry_point(cls, ep)]

    def _warn_shadow(self, name: str, cls: type, slot: EntryPointSlot) -> None:
        shadowed = self._shadowed(cls, slot)
        if not shadowed or name in self._warned_shadow:
            return
        self._warned_shadow.add(name)
        labels = "; ".join(ep_label(ep) for ep in shadowed)
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
            dist, version = dist_of(ep)
            return AdapterInfo(name, cls, dist, version, ep.value, error)
        shadows: tuple[str, ...] = ()
        matching = self._matching_entry_point(registration, slot)
        if matching is not None:
            dist, version = dist_of(matching)
            return AdapterInfo(name, cls, dist, version, matching.value)
        if slot is not None:
            shadows = tuple(ep_label(ep) for ep in self._shadowed(cls, slot))
        dist, version = distribution_of_module(cls.__module__)
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
                dist, version = dist_of(ep)
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
                dist, version = dist_of(ep)
                reason = name_problem(ep.name, "entry point name") or "invalid name"
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
        check_adapter_class(cls, "adapter_name(...): the adapter")
        # Candidates: the name the class was registered under, code registrations of the class,
        # and entry points naming it (e.g. a built-in imported directly, never looked up).
        candidates = [cls.__dict__.get("registered_name")]
        with self._lock:
            candidates += [n for n, r in self._code.items() if r.cls is cls]
        slots = self._discovered()
        candidates += [
            n
            for n, slot in slots.items()
            if any(class_matches_entry_point(cls, ep) for ep in slot.entry_points)
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
                parts.append(f"{off}; it would come from entry point {ep_label(declared[0])}.")
            else:
                parts.append(f"{off}.")
        elif not distribution_hint:
            parts.append(
                "No installed distribution declares it: install the package that provides it "
                f"(plugins register through the {self.group!r} entry-point group) or call "
                f"mmvq.register_adapter({name!r}, YourAdapter)."
            )
        return UnknownAdapterError(" ".join(parts), name=name, known=known, suggestion=suggestion)
