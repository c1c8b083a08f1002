"""``docs/protocol.md`` stays true: every op, event, type, field, error and close code of
``protocol/`` has its entry, and every example decodes with the real types.

Examples are shown as JSON but travel as MessagePack, so each one is encoded with
MessagePack and decoded the way its receiver would: requests with the server's
``decode_request``, replies and events with the client's ``decode_server_frame``. Replies
and events must equal what the server would encode for the decoded value; requests may
leave out fields that have defaults but may carry no field the op lacks.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec
import pytest

from protocol import PROTOCOL_VERSION, catalog, codec, events, limits, replies
from protocol import requests as rq
from protocol.errors import CLOSE_INFO, ERROR_INFO, CloseCode, ErrorCode
from tests.protocol import doc_model
from tests.protocol.doc_model import Doc, Example, Section, clean_cell

DOC = doc_model.load()

REQUEST_TYPES: list[type[rq.Request]] = list(typing.get_args(catalog.AnyRequest))
EVENT_TYPES: list[type[events.Event]] = list(typing.get_args(catalog.AnyEvent))
REQUEST_BY_OP = {t.__struct_config__.tag: t for t in REQUEST_TYPES}
EVENT_BY_OP = {t.__struct_config__.tag: t for t in EVENT_TYPES}
ENVELOPES: set[type[msgspec.Struct]] = {replies.Ok, replies.Error}
#: Structs documented in a section of their own: results, envelopes and nested types.
OTHER_STRUCTS = sorted(
    doc_model.reachable_structs(
        set(REQUEST_TYPES) | set(EVENT_TYPES) | set(catalog.RESULT_TYPES.values()) | ENVELOPES
    )
    - set(REQUEST_TYPES)
    - set(EVENT_TYPES),
    key=lambda cls: cls.__name__,
)


def _tag(cls: type[msgspec.Struct]) -> str:
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _examples(kind: str, doc: Doc = DOC) -> list[Example]:
    return [e for e in doc.examples if e.kind == kind]


def _only_section(key: str) -> Section:
    found = DOC.keyed(key)
    assert len(found) == 1, f"docs/protocol.md needs exactly one heading `{key}`, has {len(found)}"
    return found[0]


def _check_field_table(section: Section, cls: type[msgspec.Struct], skip: frozenset[str]) -> None:
    expected = doc_model.field_rows(cls, skip=skip)
    table = section.field_table()
    if not expected:
        assert table is None or not table.rows, f"{section.title}: {cls.__name__} has no fields"
        return
    assert table is not None, f"{section.title} (line {section.line}) needs a field table"
    documented: dict[str, tuple[str, str]] = {}
    for row in table.rows:
        assert len(row) == 4, f"line {table.line}: a field row has four cells: {row}"
        name, type_text, default, meaning = (clean_cell(c) for c in row)
        assert name not in documented, f"line {table.line}: field {name} twice"
        assert meaning, f"line {table.line}: field {name} needs a meaning"
        documented[name] = (type_text, default)
    assert set(documented) == set(expected), (
        f"{section.title} (line {section.line}): fields documented {sorted(documented)}, "
        f"{cls.__name__} has {sorted(expected)}"
    )
    for name, (type_text, default) in expected.items():
        assert documented[name] == (type_text, default), (
            f"{section.title}.{name}: documented as {documented[name]}, "
            f"the code says {(type_text, default)}"
        )


def _is_subset(example: Any, full: Any, path: str = "$") -> None:
    """Every key of ``example`` exists in ``full`` with the same value (recursively)."""
    if isinstance(example, dict):
        assert isinstance(full, dict), f"{path}: expected a map"
        for key, value in example.items():
            assert key in full, f"{path}.{key} is not a field of this op"
            _is_subset(value, full[key], f"{path}.{key}")
    elif isinstance(example, list):
        assert isinstance(full, list) and len(full) == len(example), f"{path}: list differs"
        for index, (mine, theirs) in enumerate(zip(example, full, strict=True)):
            _is_subset(mine, theirs, f"{path}[{index}]")
    else:
        assert example == full and type(example) is type(full), f"{path}: {example!r}"


# --- the document itself ------------------------------------------------------------------


def test_document_parses_and_every_json_block_is_tagged() -> None:
    assert not DOC.problems, "\n".join(DOC.problems)


def test_every_internal_link_resolves() -> None:
    anchors = doc_model.anchors(DOC)
    broken = [
        f"line {line}: {target}"
        for line, target in DOC.links
        if target.startswith("#") and target[1:] not in anchors
    ]
    assert not broken, "\n".join(broken)


def test_it_says_examples_travel_as_messagepack() -> None:
    text = doc_model.DOC_PATH.read_text(encoding="utf-8")
    assert "shown as JSON" in text and "MessagePack" in text


# --- ops, events, types: one entry each, with every field --------------------------------


@pytest.mark.parametrize("cls", REQUEST_TYPES, ids=_tag)
def test_every_op_has_an_entry(cls: type[rq.Request]) -> None:
    op = _tag(cls)
    section = _only_section(op)
    _check_field_table(section, cls, skip=frozenset({"rid"}))
    result_name = catalog.RESULT_TYPES[cls].__name__
    stated = [m.group(1) for line in section.text if (m := re.match(r"^Result: \[`(\w+)`\]", line))]
    assert stated == [result_name], f"{op}: state 'Result: [`{result_name}`](#...)' once"
    requests = [e for e in section.examples if e.kind == "request" and e.attrs.get("op") == op]
    results = [e for e in section.examples if e.kind == "result" and e.attrs.get("op") == op]
    assert requests, f"{op}: needs a ```json request op={op}``` example in its section"
    assert results, f"{op}: needs a ```json result op={op}``` example in its section"


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=_tag)
def test_every_event_has_an_entry(cls: type[events.Event]) -> None:
    op = _tag(cls)
    section = _only_section(op)
    _check_field_table(section, cls, skip=frozenset())
    examples = [e for e in section.examples if e.kind == "event" and e.attrs.get("op") == op]
    assert examples, f"{op}: needs a ```json event op={op}``` example in its section"


@pytest.mark.parametrize("cls", OTHER_STRUCTS, ids=lambda cls: cls.__name__)
def test_every_result_and_nested_type_has_an_entry(cls: type[msgspec.Struct]) -> None:
    section = _only_section(cls.__name__)
    _check_field_table(section, cls, skip=frozenset())


def test_named_types_are_defined() -> None:
    values = list(doc_model.NAMED_TYPES.values())
    for index, value in enumerate(values):
        assert value not in values[index + 1 :], "two named types are the same type"
    tables = [t for t in DOC.tables if t.header == ("name", "definition", "meaning")]
    assert len(tables) == 1, "one table | name | definition | meaning | defines named types"
    rows = {clean_cell(r[0]): clean_cell(r[1]) for r in tables[0].rows}
    for name, tp in doc_model.NAMED_TYPES.items():
        assert name in rows, f"named type {name} is not defined"
        assert rows[name] == doc_model.render_type(tp, use_names=False), name


def test_no_entry_for_something_that_does_not_exist() -> None:
    known = (
        set(REQUEST_BY_OP)
        | set(EVENT_BY_OP)
        | {cls.__name__ for cls in OTHER_STRUCTS}
        | set(doc_model.NAMED_TYPES)
    )
    stray = [
        f"line {s.line}: {s.key}" for s in DOC.sections if s.key is not None and s.key not in known
    ]
    assert not stray, "headings naming nothing in protocol/:\n" + "\n".join(stray)


# --- examples decode with the real types ----------------------------------------------------


@pytest.mark.parametrize("example", _examples("request"), ids=Example.where)
def test_request_example_decodes(example: Example) -> None:
    op = example.attrs.get("op", "")
    assert op in REQUEST_BY_OP, f"{example.where()}: op= names no op"
    request = codec.decode_request(example.frame)
    assert type(request) is REQUEST_BY_OP[op], example.where()
    _is_subset(example.value, msgspec.to_builtins(request))
    assert msgspec.convert(example.value, REQUEST_BY_OP[op], strict=True) == request
    if isinstance(request, rq.Hello):
        assert request.version == PROTOCOL_VERSION


def _request_rids(op: str) -> set[int]:
    return {e.value["rid"] for e in _examples("request") if e.attrs.get("op") == op}


@pytest.mark.parametrize("example", _examples("result"), ids=Example.where)
def test_result_example_decodes(example: Example) -> None:
    op = example.attrs.get("op", "")
    assert op in REQUEST_BY_OP, f"{example.where()}: op= names no op"
    result_type = catalog.RESULT_TYPES[REQUEST_BY_OP[op]]
    frame = codec.decode_server_frame(example.frame)
    assert isinstance(frame, codec.OkFrame), f"{example.where()}: not an ok reply"
    result = codec.decode_result(frame.result, result_type)
    assert msgspec.convert(example.value["result"], result_type, strict=True) == result
    assert example.value == msgspec.to_builtins(replies.Ok(rid=frame.rid, result=result)), (
        f"{example.where()}: differs from what the server sends for it (missing fields?)"
    )
    assert frame.rid in _request_rids(op), (
        f"{example.where()}: rid {frame.rid} answers no `{op}` request example"
    )


@pytest.mark.parametrize("example", _examples("event"), ids=Example.where)
def test_event_example_decodes(example: Example) -> None:
    op = example.attrs.get("op", "")
    assert op in EVENT_BY_OP, f"{example.where()}: op= names no event"
    event = codec.decode_server_frame(example.frame)
    assert type(event) is EVENT_BY_OP[op], example.where()
    assert msgspec.convert(example.value, EVENT_BY_OP[op], strict=True) == event
    assert example.value == msgspec.to_builtins(event), (
        f"{example.where()}: differs from what the server sends for it (missing fields?)"
    )


@pytest.mark.parametrize("example", _examples("error"), ids=Example.where)
def test_error_example_decodes(example: Example) -> None:
    error = codec.decode_server_frame(example.frame)
    assert isinstance(error, replies.Error), example.where()
    assert msgspec.convert(example.value, replies.Error, strict=True) == error
    code = ErrorCode(error.code)
    assert example.attrs.get("code") == str(int(code)), example.where()
    info = ERROR_INFO[code]
    assert (error.name, error.retryable) == (info.name, info.retryable), example.where()
    assert example.value == msgspec.to_builtins(error), example.where()
    assert (error.retry_after is not None) == (code is ErrorCode.RATE_LIMITED), (
        f"{example.where()}: retry_after comes with rate_limited (and only with it)"
    )


def test_every_error_code_has_an_example() -> None:
    shown = {e.value.get("code") for e in _examples("error")}
    missing = [f"{int(c)} {c.name}" for c in ErrorCode if int(c) not in shown]
    assert not missing, "error codes without a ```json error code=N``` example: " + str(missing)


# --- codes, limits, handshake ---------------------------------------------------------------


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _code_table(header: tuple[str, ...]) -> dict[int, tuple[str, ...]]:
    tables = [t for t in DOC.tables if t.header == header]
    assert len(tables) == 1, f"docs/protocol.md needs one table with header {header}"
    rows: dict[int, tuple[str, ...]] = {}
    for row in tables[0].rows:
        cells = tuple(clean_cell(c) for c in row)
        assert len(cells) == len(header), f"line {tables[0].line}: {row}"
        assert int(cells[0]) not in rows, f"code {cells[0]} twice"
        assert cells[-1], f"code {cells[0]} needs a meaning"
        rows[int(cells[0])] = cells
    return rows


def test_error_code_table_matches_the_code() -> None:
    rows = _code_table(("code", "name", "retryable", "fault", "meaning"))
    assert set(rows) == {int(c) for c in ErrorCode}
    for code, info in ERROR_INFO.items():
        _, name, retryable, fault, _ = rows[int(code)]
        assert (name, retryable, fault) == (info.name, _yes_no(info.retryable), info.fault)


def test_close_code_table_matches_the_code() -> None:
    rows = _code_table(("code", "name", "reconnect", "fault", "meaning"))
    assert set(rows) == {int(c) for c in CloseCode}
    for code, info in CLOSE_INFO.items():
        _, name, reconnect, fault, _ = rows[int(code)]
        assert (name, reconnect, fault) == (info.name, _yes_no(info.retryable), info.fault)


def test_limits_table_matches_the_code() -> None:
    constants: dict[str, float] = {
        name: value
        for name, value in vars(limits).items()
        if name.isupper() and isinstance(value, int | float)
    }
    constants["PROTOCOL_VERSION"] = PROTOCOL_VERSION
    tables = [t for t in DOC.tables if t.header == ("constant", "value", "meaning")]
    assert len(tables) == 1, "one table | constant | value | meaning | lists the limits"
    rows = {clean_cell(r[0]): clean_cell(r[1]) for r in tables[0].rows}
    assert set(rows) == set(constants)
    for name, value in constants.items():
        assert float(rows[name]) == value, f"{name} is {value}, documented {rows[name]}"


def test_pre_auth_ops_are_listed() -> None:
    lines = [
        line
        for section in DOC.sections
        for line in section.text
        if line.strip().startswith("Ops accepted before authentication:")
    ]
    assert len(set(lines)) == 1, "state 'Ops accepted before authentication: ...' once"
    listed = set(re.findall(r"`([a-z_.]+)`", lines[0]))
    assert listed == {_tag(cls) for cls in catalog.PRE_AUTH_OPS}
