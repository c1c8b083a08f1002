"""Encode and decode frames: the only place MessagePack is touched.

Decoding is two steps, both in msgspec's C code:

1. an untyped decode that checks the whole frame is well-formed MessagePack, with no ext
   types, valid UTF-8 in every string (unknown fields included), no trailing bytes, and
   nesting no deeper than ``MAX_DEPTH``;
2. a typed conversion into the request union, which checks every known field's type and
   bounds and names the offending field in ``path``.

Any failure becomes a ``ProtocolError`` with a stable code; no other exception escapes.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import msgspec

from protocol import limits
from protocol.catalog import AnyEvent, AnyRequest
from protocol.errors import ERROR_INFO, ErrorCode, ProtocolError
from protocol.replies import Error, Ok
from protocol.requests import Request


def _reject_ext(code: int, data: memoryview) -> NoReturn:
    raise _ExtTypeError(code)


class _ExtTypeError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"ext type {code}")


_untyped_decoder = msgspec.msgpack.Decoder(ext_hook=_reject_ext)
_lenient_decoder = msgspec.msgpack.Decoder()
_typed_decoder: msgspec.msgpack.Decoder[AnyRequest] = msgspec.msgpack.Decoder(
    AnyRequest, ext_hook=_reject_ext
)
_encoder = msgspec.msgpack.Encoder()
T = TypeVar("T")
_PATH = re.compile(r" - at `(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]*)`")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` containers (iterative, no recursion).

    Also refuses non-string keys and timestamps: msgspec decodes the MessagePack timestamp
    extension (type -1) to ``datetime`` without calling ``ext_hook``, and no ext type is
    accepted anywhere, unknown fields included.

    Walked a level at a time, with exact type checks (msgspec's untyped decode makes only
    ``dict``, ``list``, ``str``, ``bytes``, ``int``, ``float``, ``bool``, ``None`` and
    ``datetime``): it runs on every frame, and this is about twice as fast as a stack of
    (container, depth) pairs."""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            children = item
            if type(item) is dict:
                for key in item:
                    if type(key) is not str:
                        raise ProtocolError(ErrorCode.MALFORMED, "map keys must be strings")
                children = item.values()
            for child in children:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
                elif kind is datetime:
                    raise ProtocolError(ErrorCode.UNSUPPORTED_TYPE, "ext type -1 (timestamp)")
        level = below
        depth += 1
    return False


def decode_request(frame: bytes) -> AnyRequest:
    """Decode one client frame into a typed request, or raise ``ProtocolError``."""
    if len(frame) > limits.MAX_FRAME_BYTES:
        raise ProtocolError(ErrorCode.TOO_LARGE, "frame exceeds MAX_FRAME_BYTES")
    try:
        raw = _untyped_decoder.decode(frame)
    except _ExtTypeError as exc:
        raise ProtocolError(ErrorCode.UNSUPPORTED_TYPE, str(exc)) from None
    except RecursionError:
        raise ProtocolError(ErrorCode.TOO_DEEP, "frame nests too deeply") from None
    except UnicodeDecodeError:
        raise ProtocolError(ErrorCode.MALFORMED, "a string is not valid UTF-8") from None
    except (msgspec.DecodeError, ValueError, OverflowError) as exc:
        if "MessagePack timestamp" in str(exc):
            raise ProtocolError(ErrorCode.UNSUPPORTED_TYPE, "ext type -1 (timestamp)") from None
        raise ProtocolError(ErrorCode.MALFORMED, str(exc)) from None
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.MALFORMED, "a frame must be one MessagePack map")
    if _depth_exceeds(raw, limits.MAX_DEPTH):
        raise ProtocolError(ErrorCode.TOO_DEEP, f"frame nests deeper than {limits.MAX_DEPTH}")
    return _typed(frame, raw)


def _typed(frame: bytes, raw: dict[str, Any]) -> AnyRequest:
    """The typed decode, from the bytes again: msgspec's typed decoder takes about a
    microsecond, where ``msgspec.convert`` of the checked map into the request union took
    60-170 us (it grows with the union)."""
    op = raw.get("op")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "missing or non-string `op`", path="$.op")
    try:
        return _typed_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        path = match.group("path") if match else None
        if text.startswith("Invalid value") and path == "$.op":
            raise ProtocolError(
                ErrorCode.UNKNOWN_OP, f"unknown op {op[:64]!r}", path="$.op"
            ) from None
        missing = _MISSING.match(text)
        if missing is not None:
            path = f"{path or '$'}.{missing.group('field')}"
        code = ErrorCode.TOO_LARGE if "length <=" in text else ErrorCode.INVALID_FIELD
        raise ProtocolError(code, text, path=path) from None


def request_id_of(frame: bytes) -> int | None:
    """Best effort: the ``rid`` of a frame that failed to decode, for the error reply."""
    try:
        # Lenient on purpose: an ext type or the like elsewhere should not hide the rid.
        raw = _lenient_decoder.decode(frame)
    except Exception:
        return None
    if isinstance(raw, dict):
        rid = raw.get("rid")
        if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= limits.MAX_SAFE_INT:
            return rid
    return None


def encode(message: msgspec.Struct) -> bytes:
    """Encode a reply, event or request struct as one MessagePack map."""
    return _encoder.encode(message)


def encode_ok(rid: int, result: msgspec.Struct) -> bytes:
    return _encoder.encode(Ok(rid=rid, result=result))


def error_reply(error: ProtocolError, rid: int | None) -> Error:
    info = ERROR_INFO[error.code]
    return Error(
        rid=rid,
        code=int(error.code),
        name=info.name,
        message=error.message[:512],
        retryable=info.retryable,
        path=error.path,
        retry_after=error.retry_after,
    )


def encode_error(error: ProtocolError, rid: int | None) -> bytes:
    return _encoder.encode(error_reply(error, rid))


# --- the client side: decode what the server sends ----------------------------------------


class OkFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag="ok"):
    """``ok`` as a client reads it: the result stays raw until the caller names its type."""

    rid: int
    result: msgspec.Raw


ServerFrame = OkFrame | Error | AnyEvent
_server_decoder: msgspec.msgpack.Decoder[OkFrame | Error | AnyEvent] = msgspec.msgpack.Decoder(
    ServerFrame
)


def decode_server_frame(frame: bytes) -> OkFrame | Error | AnyEvent:
    """Decode a frame from the server (client SDK side). Raises ``msgspec.DecodeError``."""
    return _server_decoder.decode(frame)


def decode_result(raw: msgspec.Raw, result_type: type[T]) -> T:
    return msgspec.msgpack.decode(raw, type=result_type)


def encode_request(request: Request) -> bytes:
    return _encoder.encode(request)
