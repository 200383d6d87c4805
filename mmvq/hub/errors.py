"""Network and authentication failures of Hub calls, as one line that says what to check.

A push or download that cannot reach the Hub, or that the Hub refuses, raises
:class:`HubAccessError` whose message names the call, the endpoint (and whether ``HF_ENDPOINT``
set it), where the token came from (never its value), whether offline mode is on, and the fix.
The transport's own exception (``httpx``/``requests`` connection errors, timeouts, DNS
failures) is recognised by type, so any ``huggingface_hub`` version's client is covered.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from mmvq.hub.format import PretrainedError, PretrainedNotFoundError

__all__ = [
    "HubAccessError",
    "access_error",
    "describe_token",
    "hub_endpoint",
    "is_network_error",
    "network_cause",
    "not_downloaded",
    "reword",
]

_TRANSPORT_MODULES = {"httpx", "httpx2", "requests", "urllib3", "aiohttp"}
_TRANSPORT_NAMES = {
    "TransportError",
    "ConnectionError",
    "Timeout",
    "TimeoutException",
    "NewConnectionError",
    "MaxRetryError",
    "ClientConnectionError",
}


class HubAccessError(PretrainedError, ConnectionError):
    """The Hub could not be reached (network, endpoint, offline mode) or refused the token."""


def hub_endpoint() -> tuple[str, bool]:
    """The endpoint the client uses, and whether ``HF_ENDPOINT`` set it."""
    from huggingface_hub import constants

    return constants.ENDPOINT, bool(os.environ.get("HF_ENDPOINT"))


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def describe_token(token: str | bool | None) -> str:
    """Where the token of a call comes from, in words (the value is never shown)."""
    if token is False:
        return "no token (token=False)"
    if isinstance(token, str):
        return "the token passed as token=..."
    if os.environ.get("HF_TOKEN"):
        return "the token in HF_TOKEN"
    from huggingface_hub import get_token

    if get_token():
        return "the token saved by `hf auth login`"
    return "no token (none passed, no HF_TOKEN, not logged in)"


def network_cause(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (itself, its cause or context) that is a failure to reach
    the server at all (connection refused, DNS, timeout, offline mode), or ``None``."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return current
        if isinstance(current, socket.gaierror):
            return current
        for cls in type(current).__mro__:
            if (
                cls.__module__.split(".")[0] in _TRANSPORT_MODULES
                and cls.__name__ in _TRANSPORT_NAMES
            ):
                return current
        current = current.__cause__ or current.__context__
    return None


def is_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a failure to reach the server at all."""
    return network_cause(exc) is not None


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _reason(exc: BaseException) -> str:
    said = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {said[:160]}" if said else type(exc).__name__


def access_error(
    action: str, exc: BaseException, token: str | bool | None
) -> HubAccessError | None:
    """The :class:`HubAccessError` for ``exc`` raised by ``action`` (e.g. ``push_to_hub('org/x')``),
    or ``None`` when ``exc`` is neither a network failure nor a refused token."""
    endpoint, from_env = hub_endpoint()
    where = f"the Hub at {endpoint}" + (" (from HF_ENDPOINT)" if from_env else "")
    cause = network_cause(exc)
    if cause is not None:
        if _offline():
            return HubAccessError(
                f"{action}: offline mode is on (HF_HUB_OFFLINE=1), so {where} was not contacted; "
                "unset HF_HUB_OFFLINE to reach the Hub, or work from local directories."
            )
        endpoint_fix = (
            "check that HF_ENDPOINT is right, or unset it for https://huggingface.co"
            if from_env
            else "check the network connection (or set HF_ENDPOINT to your Hub mirror)"
        )
        return HubAccessError(
            f"{action}: could not reach {where} ({_reason(cause)}); {endpoint_fix}. Token: "
            f"{describe_token(token)}. Offline use: HF_HUB_OFFLINE=1 with local directories or "
            "cached models."
        )
    status = _status(exc)
    if status in (401, 403):
        return HubAccessError(
            f"{action}: {where} refused the request ({status} "
            f"{'Unauthorized' if status == 401 else 'Forbidden'}) with "
            f"{describe_token(token)}; pass a token with write access (token=..., HF_TOKEN, or "
            "`hf auth login`) to a namespace you own."
        )
    return None


def reword(action: str, exc: BaseException, token: str | bool | None) -> Any:
    """Raise the :class:`HubAccessError` of ``exc`` if it is one; otherwise return (the caller
    re-raises ``exc``)."""
    error = access_error(action, exc, token)
    if error is not None:
        raise error from None


def not_downloaded(
    where: str, exc: BaseException, token: str | bool | None, local_files_only: bool
) -> PretrainedError:
    """The error of a download that failed with nothing cached, naming what to check."""
    if local_files_only:
        return PretrainedNotFoundError(
            f"{where} is not in the local cache and local_files_only=True forbids downloading it; "
            "download it once with network access (local_files_only=False), or pass a local "
            "directory."
        )
    access = access_error(f"from_pretrained: {where}", exc, token)
    if access is not None:
        return access
    endpoint, from_env = hub_endpoint()
    return PretrainedError(
        f"{where} could not be downloaded and no cached copy exists ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}); the Hub is {endpoint}"
        + (" (from HF_ENDPOINT)" if from_env else "")
        + f", token: {describe_token(token)}; check the network and HF_ENDPOINT, or pass a local "
        "directory."
    )
