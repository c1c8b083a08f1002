"""The codec refuses every kind of malformed frame with its stable code, and nothing else
escapes it; every request type survives an encode/decode round trip.

Malformed input is covered three ways: a table of hand-made frames, one per class of fault
(each with the ``ErrorCode`` and ``path`` a client is promised); a generated sweep over every
constrained field of every request type (just inside the bound decodes, just outside is
refused with the right code and path); and fuzzing with random and mutated bytes, where the
only acceptable outcomes are a request or a ``ProtocolError``.
"""

from __future__ import annotations

import copy
import typing
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import inspect as mi

from protocol import catalog, codec, limits, replies
from protocol import requests as rq
from protocol.errors import ERROR_INFO, ErrorCode, ProtocolError
from tests.protocol.request_values import edge_frame, strategy, tag_of, violations

REQUEST_TYPES: list[type[rq.Request]] = list(typing.get_args(catalog.AnyRequest))
enc = msgspec.msgpack.encode

#: A valid frame to build broken ones from: {"op": "ping", "rid": 1}.
PING = b"\x82\xa2op\xa4ping\xa3rid\x01"
#: The same map with room for one more entry: 3 entries, the last one's key and value follow.
PING3 = b"\x83\xa2op\xa4ping\xa3rid\x01"


def req(op: str, **fields: Any) -> bytes:
    """A request frame with ``rid`` 1."""
    return enc({"op": op, "rid": 1, **fields})


def send(content: Any, **fields: Any) -> bytes:
    """A ``msg.send`` frame to ``g:1`` with ``content``."""
    return req("msg.send", **{"conv": "g:1", "cmid": "a", "content": content, **fields})


def refused(frame: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        codec.decode_request(frame)
    return caught.value


def nested(depth: int, *, leaf: bytes = b"\x90") -> bytes:
    """``depth`` - 1 one-element arrays around ``leaf`` (itself a container): ``depth``
    containers in all."""
    return b"\x91" * (depth - 1) + leaf


# --- one frame per class of fault -------------------------------------------------------------

MALFORMED_FRAMES: list[tuple[str, bytes, ErrorCode, str | None]] = [
    # not MessagePack, truncated, trailing bytes
    ("empty frame", b"", ErrorCode.MALFORMED, None),
    ("reserved byte 0xc1", b"\xc1", ErrorCode.MALFORMED, None),
    ("json text in a binary frame", b'{"op": "ping", "rid": 1}', ErrorCode.MALFORMED, None),
    ("truncated map", PING[:-1], ErrorCode.MALFORMED, None),
    ("truncated string", PING[:6], ErrorCode.MALFORMED, None),
    ("trailing byte", PING + b"\x00", ErrorCode.MALFORMED, None),
    ("two maps in one frame", PING + PING, ErrorCode.MALFORMED, None),
    # declared lengths far beyond the frame
    ("str32 of 4 GiB", PING3 + b"\xa1x\xdb\xff\xff\xff\xff", ErrorCode.MALFORMED, None),
    ("bin32 of 4 GiB", PING3 + b"\xa1x\xc6\xff\xff\xff\xff", ErrorCode.MALFORMED, None),
    ("array32 of 4G items", PING3 + b"\xa1x\xdd\xff\xff\xff\xff", ErrorCode.MALFORMED, None),
    ("map32 of 4G entries", b"\xdf\xff\xff\xff\xff", ErrorCode.MALFORMED, None),
    ("ext32 of 4 GiB", PING3 + b"\xa1x\xc9\xff\xff\xff\xff\x05", ErrorCode.MALFORMED, None),
    ("str8 longer than the rest", PING3 + b"\xa1x\xd9\xff" + b"a" * 10, ErrorCode.MALFORMED, None),
    # nesting
    ("17 levels", PING3 + b"\xa4junk" + nested(16), ErrorCode.TOO_DEEP, None),
    (
        "17 levels of maps",
        PING3 + b"\xa4junk" + b"\x81\xa1k" * 15 + b"\x80",
        ErrorCode.TOO_DEEP,
        None,
    ),
    ("60000 levels", PING3 + b"\xa4junk" + nested(60_000), ErrorCode.TOO_DEEP, None),
    (
        "20000 levels of maps",
        PING3 + b"\xa4junk" + b"\x81\xa1k" * 20_000 + b"\x80",
        ErrorCode.TOO_DEEP,
        None,
    ),
    # ext types, in known and unknown fields
    ("ext as rid", b"\x82\xa2op\xa4ping\xa3rid\xd4\x05\x01", ErrorCode.UNSUPPORTED_TYPE, None),
    ("ext in unknown field", PING3 + b"\xa1x\xd4\x05\x01", ErrorCode.UNSUPPORTED_TYPE, None),
    (
        "ext in unknown list",
        PING3 + b"\xa1x\x92\x01\xd5\x7f\x00\x00",
        ErrorCode.UNSUPPORTED_TYPE,
        None,
    ),
    ("negative ext type", PING3 + b"\xa1x\xd4\x80\x00", ErrorCode.UNSUPPORTED_TYPE, None),
    (
        "timestamp32 as rid",
        b"\x82\xa2op\xa4ping\xa3rid\xd6\xff\x00\x00\x00\x01",
        ErrorCode.UNSUPPORTED_TYPE,
        None,
    ),
    (
        "timestamp32 in unknown field",
        PING3 + b"\xa1x\xd6\xff\x00\x00\x00\x01",
        ErrorCode.UNSUPPORTED_TYPE,
        None,
    ),
    (
        "timestamp64 in unknown field",
        PING3 + b"\xa1x\xd7\xff" + b"\x00" * 8,
        ErrorCode.UNSUPPORTED_TYPE,
        None,
    ),
    (
        "timestamp96 in unknown list",
        PING3 + b"\xa1x\x91\xc7\x0c\xff" + b"\x00" * 12,
        ErrorCode.UNSUPPORTED_TYPE,
        None,
    ),
    ("malformed timestamp", PING3 + b"\xa1x\xd5\xff\x00\x01", ErrorCode.UNSUPPORTED_TYPE, None),
    (
        "timestamp in message text",
        b"\x85\xa2op\xa8msg.send\xa3rid\x01\xa4conv\xa3g:1\xa4cmid\xa1a\xa7content\x81\xa4text"
        + b"\xd6\xff\x00\x00\x00\x01",
        ErrorCode.UNSUPPORTED_TYPE,
        None,
    ),
    # keys that are not strings
    ("int key", PING3 + b"\x05\x01", ErrorCode.MALFORMED, None),
    ("bin key", PING3 + b"\xc4\x01x\x01", ErrorCode.MALFORMED, None),
    ("nil key", PING3 + b"\xc0\x01", ErrorCode.MALFORMED, None),
    ("bool key", PING3 + b"\xc3\x01", ErrorCode.MALFORMED, None),
    ("array key", PING3 + b"\x91\x01\x01", ErrorCode.MALFORMED, None),
    ("map key", PING3 + b"\x81\xa1a\x01\x01", ErrorCode.MALFORMED, None),
    ("int key in a nested map", PING3 + b"\xa1x\x81\x05\x01", ErrorCode.MALFORMED, None),
    ("int key in a map in a list", PING3 + b"\xa1x\x91\x81\x05\x01", ErrorCode.MALFORMED, None),
    # invalid UTF-8
    ("invalid utf-8 value", PING3 + b"\xa1x\xa2\xff\xfe", ErrorCode.MALFORMED, None),
    ("invalid utf-8 key", PING3 + b"\xa2\xff\xfe\x01", ErrorCode.MALFORMED, None),
    ("lone surrogate (CESU)", PING3 + b"\xa1x\xa3\xed\xa0\x80", ErrorCode.MALFORMED, None),
    ("overlong utf-8", PING3 + b"\xa1x\xa2\xc0\xaf", ErrorCode.MALFORMED, None),
    ("invalid utf-8 op", b"\x82\xa2op\xa2\xff\xfe\xa3rid\x01", ErrorCode.MALFORMED, None),
    # not a map
    ("array frame", enc([{"op": "ping", "rid": 1}]), ErrorCode.MALFORMED, None),
    ("int frame", enc(1), ErrorCode.MALFORMED, None),
    ("string frame", enc("ping"), ErrorCode.MALFORMED, None),
    ("nil frame", b"\xc0", ErrorCode.MALFORMED, None),
    ("bin frame", b"\xc4\x02\x82\xa2", ErrorCode.MALFORMED, None),
    ("timestamp frame", b"\xd6\xff\x00\x00\x00\x01", ErrorCode.MALFORMED, None),
    # op
    ("unknown op", enc({"op": "msg.edit", "rid": 1}), ErrorCode.UNKNOWN_OP, "$.op"),
    ("empty op", enc({"op": "", "rid": 1}), ErrorCode.UNKNOWN_OP, "$.op"),
    ("reply op sent as a request", enc({"op": "ok", "rid": 1}), ErrorCode.UNKNOWN_OP, "$.op"),
    (
        "event op sent as a request",
        enc({"op": "ev.message", "rid": 1}),
        ErrorCode.UNKNOWN_OP,
        "$.op",
    ),
    ("op of another case", enc({"op": "PING", "rid": 1}), ErrorCode.UNKNOWN_OP, "$.op"),
    ("missing op", enc({"rid": 1}), ErrorCode.INVALID_FIELD, "$.op"),
    ("int op", enc({"op": 1, "rid": 1}), ErrorCode.INVALID_FIELD, "$.op"),
    ("bin op", b"\x82\xa2op\xc4\x04ping\xa3rid\x01", ErrorCode.INVALID_FIELD, "$.op"),
    ("nil op", enc({"op": None, "rid": 1}), ErrorCode.INVALID_FIELD, "$.op"),
    # rid
    ("missing rid", enc({"op": "ping"}), ErrorCode.INVALID_FIELD, "$.rid"),
    ("string rid", enc({"op": "ping", "rid": "1"}), ErrorCode.INVALID_FIELD, "$.rid"),
    ("float rid", enc({"op": "ping", "rid": 1.0}), ErrorCode.INVALID_FIELD, "$.rid"),
    (
        "float32 rid",
        b"\x82\xa2op\xa4ping\xa3rid\xca\x3f\x80\x00\x00",
        ErrorCode.INVALID_FIELD,
        "$.rid",
    ),
    ("bool rid", enc({"op": "ping", "rid": True}), ErrorCode.INVALID_FIELD, "$.rid"),
    ("nil rid", enc({"op": "ping", "rid": None}), ErrorCode.INVALID_FIELD, "$.rid"),
    ("negative rid", enc({"op": "ping", "rid": -1}), ErrorCode.INVALID_FIELD, "$.rid"),
    (
        "int64 min rid",
        b"\x82\xa2op\xa4ping\xa3rid\xd3\x80" + b"\x00" * 7,
        ErrorCode.INVALID_FIELD,
        "$.rid",
    ),
    ("rid 2^53", enc({"op": "ping", "rid": 2**53}), ErrorCode.INVALID_FIELD, "$.rid"),
    ("rid 2^64-1", enc({"op": "ping", "rid": 2**64 - 1}), ErrorCode.INVALID_FIELD, "$.rid"),
    # wrong field types
    ("string peer", req("direct.open", peer="42"), ErrorCode.INVALID_FIELD, "$.peer"),
    ("float peer", req("direct.open", peer=42.0), ErrorCode.INVALID_FIELD, "$.peer"),
    ("bool peer", req("direct.open", peer=True), ErrorCode.INVALID_FIELD, "$.peer"),
    (
        "bin token",
        b"\x83\xa2op\xa4auth\xa3rid\x01\xa5token\xc4\x01x",
        ErrorCode.INVALID_FIELD,
        "$.token",
    ),
    ("int flag", req("settings.set", notifications=1), ErrorCode.INVALID_FIELD, "$.notifications"),
    ("map as list", req("users.get", user_ids={"a": 1}), ErrorCode.INVALID_FIELD, "$.user_ids"),
    (
        "string in int list",
        req("users.get", user_ids=[1, "2"]),
        ErrorCode.INVALID_FIELD,
        "$.user_ids[1]",
    ),
    ("list as struct", send([]), ErrorCode.INVALID_FIELD, "$.content"),
    ("nil content", send(None), ErrorCode.INVALID_FIELD, "$.content"),
    ("nil for a non-null default", req("sync", summary=None), ErrorCode.INVALID_FIELD, "$.summary"),
    (
        "unknown enum value",
        req("group.set_role", conv="g:1", user=2, role="owner"),
        ErrorCode.INVALID_FIELD,
        "$.role",
    ),
    ("unknown content kind", send({"kind": "video"}), ErrorCode.INVALID_FIELD, "$.content.kind"),
    # ranges and patterns
    ("peer 0", req("direct.open", peer=0), ErrorCode.INVALID_FIELD, "$.peer"),
    ("peer 2^53", req("direct.open", peer=2**53), ErrorCode.INVALID_FIELD, "$.peer"),
    ("negative seq", req("read", conv="g:1", seq=-1), ErrorCode.INVALID_FIELD, "$.seq"),
    ("mention 2^53", send({"mentions": [2**53]}), ErrorCode.INVALID_FIELD, "$.content.mentions[0]"),
    ("limit 0", req("sync", limit=0), ErrorCode.INVALID_FIELD, "$.limit"),
    ("limit 501", req("sync", limit=501), ErrorCode.INVALID_FIELD, "$.limit"),
    (
        "conversation id of no kind",
        req("group.info", conv="x:1"),
        ErrorCode.INVALID_FIELD,
        "$.conv",
    ),
    (
        "conversation id with leading zero",
        req("group.info", conv="g:07"),
        ErrorCode.INVALID_FIELD,
        "$.conv",
    ),
    (
        "conversation id with user 0",
        req("group.info", conv="d:0:5"),
        ErrorCode.INVALID_FIELD,
        "$.conv",
    ),
    (
        "phone without plus",
        req("login.request_code", phone="8613800138000"),
        ErrorCode.INVALID_FIELD,
        "$.phone",
    ),
    (
        "code with letters",
        req("login.verify", phone="+8613800138000", code="12a456"),
        ErrorCode.INVALID_FIELD,
        "$.code",
    ),
    # oversized strings and lists
    ("text of 8001 chars", send({"text": "x" * 8001}), ErrorCode.TOO_LARGE, "$.content.text"),
    (
        "text of 8001 emoji",
        send({"text": "\U0001f600" * 8001}),
        ErrorCode.TOO_LARGE,
        "$.content.text",
    ),
    (
        "cmid of 129 chars",
        req("msg.send", conv="g:1", cmid="c" * 129, content={}),
        ErrorCode.TOO_LARGE,
        "$.cmid",
    ),
    (
        "conversation id of 65 chars",
        req("group.info", conv="g:" + "1" * 63),
        ErrorCode.TOO_LARGE,
        "$.conv",
    ),
    ("token of 1025 chars", req("auth", token="t" * 1025), ErrorCode.TOO_LARGE, "$.token"),
    (
        "501 users",
        req("users.get", user_ids=list(range(1, 502))),
        ErrorCode.TOO_LARGE,
        "$.user_ids",
    ),
    ("501 seqs", req("receipts.counts", conv="g:1", seqs=[1] * 501), ErrorCode.TOO_LARGE, "$.seqs"),
    ("empty group.add", req("group.add", conv="g:1", users=[]), ErrorCode.INVALID_FIELD, "$.users"),
    ("empty title", req("group.create", cmid="a", title=""), ErrorCode.INVALID_FIELD, "$.title"),
    (
        "frame over MAX_FRAME_BYTES",
        req("ping", x="a" * limits.MAX_FRAME_BYTES),
        ErrorCode.TOO_LARGE,
        None,
    ),
    # missing fields: the path names the missing field itself
    (
        "missing top-level field",
        enc({"op": "direct.open", "rid": 1}),
        ErrorCode.INVALID_FIELD,
        "$.peer",
    ),
    (
        "missing content",
        req("msg.send", conv="g:1", cmid="a"),
        ErrorCode.INVALID_FIELD,
        "$.content",
    ),
    (
        "missing nested field",
        send({"kind": "file", "file": {"ref": "r", "mime": "a/b", "size": 1}}),
        ErrorCode.INVALID_FIELD,
        "$.content.file.name",
    ),
]


@pytest.mark.parametrize(
    ("frame", "code", "path"),
    [pytest.param(frame, code, path, id=name) for name, frame, code, path in MALFORMED_FRAMES],
)
def test_malformed_frame_is_refused_with_its_code(
    frame: bytes, code: ErrorCode, path: str | None
) -> None:
    error = refused(frame)
    assert (error.code, error.path) == (code, path), error.message
    assert error.message
    assert not error.retryable


def test_the_error_reply_of_a_refused_frame() -> None:
    frame = enc({"op": "msg.send", "rid": 9, "conv": "g:1", "cmid": "a"})
    error = refused(frame)
    reply = codec.decode_server_frame(codec.encode_error(error, codec.request_id_of(frame)))
    assert reply == replies.Error(
        rid=9,
        code=1002,
        name="invalid_field",
        message=error.message,
        retryable=False,
        path="$.content",
    )


@pytest.mark.parametrize(
    ("frame", "rid"),
    [
        (enc({"op": "nope", "rid": 5}), 5),
        (enc({"op": "direct.open", "rid": 6, "peer": "x"}), 6),
        (PING3 + b"\x05\x01", 1),
        (b"\xc1", None),
        (PING[:-1], None),
        (enc({"op": "ping", "rid": 2**53}), None),
        (enc({"op": "ping", "rid": -1}), None),
        (enc({"op": "ping", "rid": True}), None),
        (enc({"op": "ping", "rid": "1"}), None),
        (enc([1]), None),
    ],
)
def test_request_id_of_a_broken_frame(frame: bytes, rid: int | None) -> None:
    assert codec.request_id_of(frame) == rid


def test_depth_limit_is_exact() -> None:
    # The frame's map is level 1: MAX_DEPTH - 1 more containers are fine, one more is not.
    inside = PING3 + b"\xa4junk" + nested(limits.MAX_DEPTH - 1)
    assert codec.decode_request(inside) == rq.Ping(rid=1)
    assert refused(PING3 + b"\xa4junk" + nested(limits.MAX_DEPTH)).code is ErrorCode.TOO_DEEP


def test_frame_size_limit_is_exact() -> None:
    padding = limits.MAX_FRAME_BYTES - len(req("ping", x=""))
    fits = req("ping", x="a" * (padding - 4))  # str16 header: 3 bytes
    assert len(fits) <= limits.MAX_FRAME_BYTES
    assert codec.decode_request(fits) == rq.Ping(rid=1)
    over = req("ping", x="a" * limits.MAX_FRAME_BYTES)
    assert refused(over).code is ErrorCode.TOO_LARGE


def test_unknown_fields_are_ignored_but_still_checked() -> None:
    extra = {"future": {"nested": [1, "two", None, True, 2.5, {"k": b"bytes"}]}, "n": -(2**63)}
    assert codec.decode_request(enc({"op": "ping", "rid": 3, **extra})) == rq.Ping(rid=3)
    content = {"text": "hi", "future_part": {"x": 1}}
    request = codec.decode_request(
        enc({"op": "msg.send", "rid": 4, "conv": "s:1", "cmid": "c", "content": content})
    )
    assert request == rq.MsgSend(rid=4, conv="s:1", cmid="c", content=rq.Content(text="hi"))


# --- every constrained field, just inside and just outside its bounds ---------------------------


def _field_cases() -> list[Any]:
    """(request type, path to a field, bad value, code) for every field of every request,
    nested struct fields included, plus each required field left out."""
    cases: list[Any] = []

    def walk(cls: type[rq.Request], struct: mi.StructType, path: tuple[str, ...]) -> None:
        for f in struct.fields:
            where = (*path, f.encode_name)
            label = f"{tag_of(cls)}:{'.'.join(where)}"
            for what, value, code in violations(f.type):
                cases.append(pytest.param(cls, where, value, code, id=f"{label} {what}"))
            if f.required:
                cases.append(pytest.param(cls, where, None, None, id=f"{label} missing"))
            inner = f.type
            if isinstance(inner, mi.UnionType):
                inner = next(u for u in inner.types if not isinstance(u, mi.NoneType))
            if isinstance(inner, mi.StructType):
                walk(cls, inner, where)

    for cls in REQUEST_TYPES:
        struct = mi.type_info(cls)
        assert isinstance(struct, mi.StructType)
        walk(cls, struct, ())
    return cases


@pytest.mark.parametrize("cls", REQUEST_TYPES, ids=tag_of)
@pytest.mark.parametrize("high", [False, True], ids=["lower bounds", "upper bounds"])
def test_values_at_their_bounds_decode(cls: type[rq.Request], high: bool) -> None:
    frame = enc(edge_frame(cls, high=high))
    assert len(frame) <= limits.MAX_FRAME_BYTES
    request = codec.decode_request(frame)
    assert type(request) is cls
    assert codec.decode_request(codec.encode_request(request)) == request


@pytest.mark.parametrize(("cls", "where", "value", "code"), _field_cases())
def test_a_bad_field_is_refused_with_its_code_and_path(
    cls: type[rq.Request], where: tuple[str, ...], value: Any, code: ErrorCode | None
) -> None:
    frame = copy.deepcopy(edge_frame(cls, high=False))
    parent = frame
    for key in where[:-1]:
        parent = parent[key]
    if code is None:
        parent.pop(where[-1])
        code = ErrorCode.INVALID_FIELD
    else:
        parent[where[-1]] = value
    error = refused(enc(frame))
    assert (error.code, error.path) == (code, "$." + ".".join(where)), error.message


# --- round trips -------------------------------------------------------------------------------


STRATEGIES = {cls: strategy(mi.type_info(cls)) for cls in REQUEST_TYPES}


@pytest.mark.parametrize("cls", REQUEST_TYPES, ids=tag_of)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_every_request_type_round_trips(cls: type[rq.Request], data: st.DataObject) -> None:
    request = data.draw(STRATEGIES[cls])
    frame = codec.encode_request(request)
    decoded = codec.decode_request(frame)
    assert decoded == request
    assert type(decoded) is cls
    assert msgspec.msgpack.decode(frame)["op"] == tag_of(cls)


# --- fuzzing: nothing but a request or a ProtocolError ----------------------------------------


def _decode_or_refuse(frame: bytes) -> None:
    try:
        request = codec.decode_request(frame)
    except ProtocolError as error:
        assert error.code in ERROR_INFO
        return
    assert isinstance(request, rq.Request)


@settings(max_examples=500, deadline=None)
@given(frame=st.binary(max_size=256))
def test_random_bytes_never_raise_anything_else(frame: bytes) -> None:
    _decode_or_refuse(frame)
    codec.request_id_of(frame)


#: Valid frames of every request type to mutate: each at its lower and upper bounds.
SEED_FRAMES = [enc(edge_frame(cls, high=high)) for cls in REQUEST_TYPES for high in (False, True)]


@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_mutated_requests_never_raise_anything_else(data: st.DataObject) -> None:
    frame = bytearray(data.draw(st.sampled_from(SEED_FRAMES)))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        position = data.draw(st.integers(min_value=0, max_value=max(len(frame) - 1, 0)))
        if action == "flip" and frame:
            frame[position] ^= data.draw(st.integers(min_value=1, max_value=255))
        elif action == "cut":
            del frame[position:]
        elif action == "insert":
            frame[position:position] = data.draw(st.binary(min_size=1, max_size=9))
        elif frame:
            del frame[position]
    _decode_or_refuse(bytes(frame))
    codec.request_id_of(bytes(frame))


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-9, 9)), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(
    op=st.sampled_from([tag_of(cls) for cls in REQUEST_TYPES] + ["nope"]),
    fields=st.dictionaries(st.text(max_size=12), _values, max_size=6),
    rid=_values,
)
def test_random_maps_never_raise_anything_else(op: str, fields: dict[str, Any], rid: Any) -> None:
    frame = enc({**fields, "op": op, "rid": rid})
    _decode_or_refuse(frame)
