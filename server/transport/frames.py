"""Server-to-client frames built without wsproto, and the one-slot frame cache.

Frames from a server to a client are never masked (RFC 6455 §5.1), so the bytes of one
unfragmented binary frame are the same on every connection. Fan-out encodes an event once
(``server.context``) and hands the same ``bytes`` object to every recipient; ``frame``
wraps it in a frame header once (a one-slot cache keyed by that object), so each
recipient's write is one ``os.write`` of the same bytes, with no per-connection encode.

Building data frames here rather than with ``wsproto.Connection.send`` is sound because
wsproto keeps no outbound state for a complete (``fin``) data frame and we never negotiate
an extension (no compression, no RSV bit). Control frames (ping, pong, close) still come
from wsproto, which tracks the closing state.
"""

from __future__ import annotations

import struct

__all__ = ["OPCODE_BINARY", "OPCODE_TEXT", "frame", "frame_header"]

_FIN = 0x80
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2


def frame_header(length: int, *, opcode: int = OPCODE_BINARY) -> bytes:
    """The header of an unmasked, unfragmented frame (RFC 6455 §5.2), binary unless told."""
    first = _FIN | opcode
    if length < 126:
        return struct.pack("!BB", first, length)
    if length < 1 << 16:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


# One slot: fan-out hands the same payload object to every recipient in a row.
_last_payload: bytes | None = None
_last_frame = b""


def frame(payload: bytes) -> bytes:
    """One complete server-to-client binary frame carrying ``payload``."""
    global _last_payload, _last_frame
    if payload is not _last_payload:
        _last_frame = frame_header(len(payload)) + payload
        _last_payload = payload
    return _last_frame
