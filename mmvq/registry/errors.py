"""The adapter registry's errors: each names the adapter, where it was looked for and the fix."""

from __future__ import annotations

__all__ = [
    "AdapterPluginError",
    "AdapterRegistryError",
    "DuplicateAdapterError",
    "InvalidAdapterError",
    "UnknownAdapterError",
]


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
