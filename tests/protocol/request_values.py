"""Values of the request types derived from their declared constraints, for codec tests.

``edge_value`` gives a valid value at a type's lower or upper bound, ``violations`` the
values just outside it (each with the ``ErrorCode`` the codec must refuse it with), and
``strategy`` a Hypothesis strategy of valid values. All read the constraints from
``msgspec.inspect``, so a new field or a changed bound is covered without editing a test.
"""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import strategies as st
from msgspec import inspect as mi

from protocol import limits
from protocol import requests as rq
from protocol.errors import ErrorCode

MAX = limits.MAX_SAFE_INT


def tag_of(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


#: Valid strings for patterned fields, shortest and longest.
PATTERN_SAMPLES: dict[str, tuple[str, str]] = {
    r"^((o:[1-9][0-9]*:)?(d:[1-9][0-9]*:[1-9][0-9]*|g:[1-9][0-9]*)|s:[1-9][0-9]*)$": (
        "g:1",
        "o:1:d:1:" + "9" * 56,
    ),
    r"^\+[1-9][0-9]{3,14}$": ("+1000", "+1" + "0" * 14),
    r"^[0-9]+$": ("0000", "0" * 12),
    r"^(x|o[1-9][0-9]{0,15}):[1-9][0-9]{0,15}$": ("x:1", "o9" + "0" * 15 + ":9" + "0" * 15),
    r"^(x:[1-9][0-9]{0,15}(,o:[1-9][0-9]{0,15})?|o:[1-9][0-9]{0,15})$": (
        "o:1",
        "x:9" + "0" * 15 + ",o:9" + "0" * 15,
    ),
    r"^(o:[1-9][0-9]*:)?g:[1-9][0-9]*/[1-9][0-9]*$": (
        "g:1/1",
        "o:1:g:" + "9" * 26 + "/" + "9" * 31,
    ),
}
WIDE = "\U0001f600"  # four UTF-8 bytes, one code point


def edge_value(t: mi.Type, *, high: bool) -> Any:
    """A valid value of ``t`` at its lower or upper bound."""
    if isinstance(t, mi.IntType):
        return (t.le if t.le is not None else MAX) if high else (t.ge or 0)
    if isinstance(t, mi.StrType):
        if t.pattern is not None:
            return PATTERN_SAMPLES[t.pattern][high]
        return WIDE * (t.max_length if high and t.max_length else (t.min_length or 0))
    if isinstance(t, mi.ListType):
        count = (t.max_length or 3) if high else (t.min_length or 0)
        return [edge_value(t.item_type, high=high) for _ in range(count)]
    if isinstance(t, mi.BoolType):
        return high
    if isinstance(t, mi.LiteralType):
        return t.values[-1 if high else 0]
    if isinstance(t, mi.UnionType):
        inner = [u for u in t.types if not isinstance(u, mi.NoneType)]
        return edge_value(inner[0], high=high)
    if isinstance(t, mi.StructType):
        return {f.encode_name: edge_value(f.type, high=high) for f in t.fields}
    raise AssertionError(f"no edge value for {t}")


def edge_frame(cls: type[rq.Request], *, high: bool) -> dict[str, Any]:
    struct = mi.type_info(cls)
    assert isinstance(struct, mi.StructType)
    frame = edge_value(struct, high=high)
    frame["op"] = tag_of(cls)
    return dict(frame)


def violations(t: mi.Type) -> list[tuple[str, Any, ErrorCode]]:
    """Values that break ``t``, each with the code it must be refused with."""
    if isinstance(t, mi.UnionType):
        inner = [u for u in t.types if not isinstance(u, mi.NoneType)]
        assert len(inner) == 1
        return violations(inner[0])
    bad: list[tuple[str, Any, ErrorCode]] = []
    if isinstance(t, mi.IntType):
        bad.append(("a string", "1", ErrorCode.INVALID_FIELD))
        bad.append(("a float", 1.5, ErrorCode.INVALID_FIELD))
        bad.append(("a bool", True, ErrorCode.INVALID_FIELD))
        if t.ge is not None:
            bad.append(("below its minimum", t.ge - 1, ErrorCode.INVALID_FIELD))
            bad.append(("int64 min", -(2**63), ErrorCode.INVALID_FIELD))
        if t.le is not None:
            bad.append(("above its maximum", t.le + 1, ErrorCode.INVALID_FIELD))
            bad.append(("2^53", 2**53, ErrorCode.INVALID_FIELD))
            bad.append(("uint64 max", 2**64 - 1, ErrorCode.INVALID_FIELD))
    elif isinstance(t, mi.StrType):
        bad.append(("an int", 1, ErrorCode.INVALID_FIELD))
        bad.append(("bytes", b"x", ErrorCode.INVALID_FIELD))
        if t.max_length is not None:
            bad.append(("one char too long", "1" * (t.max_length + 1), ErrorCode.TOO_LARGE))
        if t.min_length:
            bad.append(("one char too short", "1" * (t.min_length - 1), ErrorCode.INVALID_FIELD))
        if t.pattern is not None:
            bad.append(("off its pattern", "x" * (t.min_length or 1), ErrorCode.INVALID_FIELD))
    elif isinstance(t, mi.ListType):
        bad.append(("a map", {"a": 1}, ErrorCode.INVALID_FIELD))
        item = edge_value(t.item_type, high=False)
        if t.max_length is not None:
            bad.append(("one item too many", [item] * (t.max_length + 1), ErrorCode.TOO_LARGE))
        if t.min_length:
            bad.append(("too few items", [], ErrorCode.INVALID_FIELD))
    elif isinstance(t, mi.BoolType):
        bad.append(("an int", 1, ErrorCode.INVALID_FIELD))
        bad.append(("a string", "true", ErrorCode.INVALID_FIELD))
    elif isinstance(t, mi.LiteralType):
        bad.append(("not one of its values", "bogus", ErrorCode.INVALID_FIELD))
    elif isinstance(t, mi.StructType):
        bad.append(("a list", [], ErrorCode.INVALID_FIELD))
    return bad


def positive_decimal() -> st.SearchStrategy[str]:
    return st.integers(min_value=1, max_value=MAX).map(str)


#: Generators for patterned strings (faster and more to the point than ``from_regex``).
PATTERN_STRATEGIES: dict[str, st.SearchStrategy[str]] = {
    r"^((o:[1-9][0-9]*:)?(d:[1-9][0-9]*:[1-9][0-9]*|g:[1-9][0-9]*)|s:[1-9][0-9]*)$": st.one_of(
        st.builds(lambda a, b: f"d:{a}:{b}", positive_decimal(), positive_decimal()),
        positive_decimal().map(lambda n: f"s:{n}"),
        positive_decimal().map(lambda n: f"g:{n}"),
        st.builds(lambda o, n: f"o:{o}:g:{n}", positive_decimal(), positive_decimal()),
        st.builds(
            lambda o, a, b: f"o:{o}:d:{a}:{b}",
            positive_decimal(),
            positive_decimal(),
            positive_decimal(),
        ),
    ),
    r"^\+[1-9][0-9]{3,14}$": st.integers(min_value=1000, max_value=10**15 - 1).map(
        lambda n: f"+{n}"
    ),
    r"^[0-9]+$": st.text(alphabet="0123456789", min_size=4, max_size=12),
    r"^(o:[1-9][0-9]*:)?g:[1-9][0-9]*/[1-9][0-9]*$": st.one_of(
        st.builds(lambda a, b: f"g:{a}/{b}", positive_decimal(), positive_decimal()),
        st.builds(
            lambda o, a, b: f"o:{o}:g:{a}/{b}",
            positive_decimal(),
            positive_decimal(),
            positive_decimal(),
        ),
    ),
    r"^(x|o[1-9][0-9]{0,15}):[1-9][0-9]{0,15}$": st.builds(
        lambda org, n: f"x:{n}" if org is None else f"o{org}:{n}",
        st.none() | st.integers(min_value=1, max_value=10**16 - 1),
        st.integers(min_value=1, max_value=10**16 - 1),
    ),
    r"^(x:[1-9][0-9]{0,15}(,o:[1-9][0-9]{0,15})?|o:[1-9][0-9]{0,15})$": st.builds(
        lambda x, o: ",".join(
            [f"x:{x}"] * (x is not None) + [f"o:{o}"] * (o is not None or x is None)
        ).replace("o:None", "o:1"),
        st.none() | st.integers(min_value=1, max_value=10**16 - 1),
        st.none() | st.integers(min_value=1, max_value=10**16 - 1),
    ),
}


def strategy(t: mi.Type) -> st.SearchStrategy[Any]:
    if isinstance(t, mi.IntType):
        return st.integers(min_value=t.ge, max_value=t.le)
    if isinstance(t, mi.StrType):
        if t.pattern is not None:
            return PATTERN_STRATEGIES[t.pattern]
        return st.text(min_size=t.min_length or 0, max_size=t.max_length)
    if isinstance(t, mi.ListType):
        return st.lists(
            strategy(t.item_type), min_size=t.min_length or 0, max_size=min(t.max_length or 8, 8)
        )
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.UnionType):
        return st.one_of([strategy(u) for u in t.types])
    if isinstance(t, mi.StructType):
        return st.builds(t.cls, **{f.name: strategy(f.type) for f in t.fields})
    raise AssertionError(f"no strategy for {t}")
