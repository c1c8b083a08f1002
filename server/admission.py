"""Which WebSocket upgrades are refused before they are accepted, and with what HTTP status.

Everything that can be decided from the HTTP request alone is decided here, before the
upgrade, so a refused client costs no WebSocket state, no reader task and no handshake
deadline:

* **503** while the server shuts down, or when it already holds ``max_connections``.
* **400** for a URL with a query string. Credentials travel in the first frame, never in
  the URL (URLs end up in proxy and access logs); refusing every query string keeps a
  client from getting that wrong silently.
* **403** for a browser whose ``Origin`` is not in ``allowed_origins``: a page on another
  site cannot open a connection in the user's name (cross-site WebSocket hijacking).
  Requests without ``Origin`` are not from a browser page and are accepted; the token in
  the first frame authenticates them. Two ``Origin`` headers are refused as ambiguous.

What needs the user (the per-user connection limit, close 4053) is decided after
authentication, in the gateway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.config import Config


@dataclass(frozen=True, slots=True)
class UpgradeRefusal:
    status: int
    body: bytes
    #: A label for the ``upgrades_refused`` metric.
    reason: str


def refuse_upgrade(
    *,
    path: str,
    headers: Sequence[tuple[bytes, bytes]],
    config: Config,
    open_connections: int,
    draining: bool,
) -> UpgradeRefusal | None:
    """The refusal for this upgrade request, or None to accept it."""
    if draining:
        return UpgradeRefusal(503, b"shutting down", "draining")
    if open_connections >= config.max_connections:
        return UpgradeRefusal(503, b"server full, retry later", "capacity")
    if "?" in path:
        return UpgradeRefusal(
            400, b"no query string: credentials go in the first frame", "query_string"
        )
    origins = [value for name, value in headers if name.lower() == b"origin"]
    if len(origins) > 1:
        return UpgradeRefusal(403, b"origin not allowed", "origin")
    if origins and not origin_allowed(origins[0], config.allowed_origins):
        return UpgradeRefusal(403, b"origin not allowed", "origin")
    return None


def origin_allowed(origin: bytes, allowed: Sequence[str]) -> bool:
    """Exact match of scheme, host and port, case-insensitive (RFC 6454 serialisation)."""
    if "*" in allowed:
        return True
    text = origin.decode("ascii", "replace").strip().lower().rstrip("/")
    return any(text == candidate.strip().lower().rstrip("/") for candidate in allowed)
