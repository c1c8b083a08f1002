"""Read ``docs/protocol.md`` into what its tests check: sections, tables, tagged examples.

The document marks what a machine checks:

* Headings whose whole text is one code span (``### `msg.send` ``) name an op, an event, a
  struct or a named type; the section runs to the next heading of the same or a higher
  level.
* Tables are GitHub pipe tables; a ``\\|`` inside a cell is a literal pipe.
* Examples are fenced blocks whose info string is ``json <kind> key=value...`` (shown as
  JSON, sent as MessagePack) or ``hex <kind> key=value...`` (the exact MessagePack bytes),
  where ``<kind>`` is ``request``, ``result``, ``event`` or ``error``.

Types are rendered from the annotations of the real structs (``render_type``) so a field
table's type column can be compared with the code it documents.
"""

from __future__ import annotations

import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import msgspec

from protocol import ding, events, ids, limits, live, replies
from protocol import types as ptypes

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLE_KINDS = frozenset({"request", "result", "event", "error"})
FIELD_TABLE_HEADER = ("field", "type", "default", "meaning")

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^```(.*)$")
_CODE_SPAN_ONLY = re.compile(r"^`([^`]+)`$")
_LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class Example:
    kind: str
    attrs: dict[str, str]
    fmt: Literal["json", "hex"]
    value: Any
    frame: bytes
    line: int

    def where(self) -> str:
        return f"docs/protocol.md:{self.line} ({self.fmt} {self.kind} {self.attrs})"


@dataclass(frozen=True)
class Table:
    line: int
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass
class Section:
    title: str
    level: int
    line: int
    end: int = 0
    examples: list[Example] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    @property
    def key(self) -> str | None:
        """The name in a heading that is exactly one code span, else None."""
        match = _CODE_SPAN_ONLY.match(self.title)
        return match.group(1) if match else None

    def field_table(self) -> Table | None:
        for table in self.tables:
            if tuple(h.lower() for h in table.header) == FIELD_TABLE_HEADER:
                return table
        return None


@dataclass
class Doc:
    sections: list[Section]
    examples: list[Example]
    tables: list[Table]
    problems: list[str]
    links: list[tuple[int, str]]

    def section(self, key: str) -> Section | None:
        found = [s for s in self.sections if s.key == key]
        return found[0] if len(found) == 1 else None

    def keyed(self, key: str) -> list[Section]:
        return [s for s in self.sections if s.key == key]


def clean_cell(cell: str) -> str:
    """A cell as plain text: links reduced to their text, code spans unquoted."""
    return _LINK.sub(r"\1", cell).replace("`", "").strip()


def _split_row(line: str) -> tuple[str, ...]:
    cells = _CELL_SPLIT.split(line.strip())
    if cells and cells[0] == "":
        cells = cells[1:]
    if cells and cells[-1] == "":
        cells = cells[:-1]
    return tuple(c.strip().replace("\\|", "|") for c in cells)


def slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    text = _LINK.sub(r"\1", title).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _parse_example(info: str, body: list[str], line: int) -> Example | str:
    words = info.split()
    fmt = words[0]
    if len(words) < 2 or words[1] not in EXAMPLE_KINDS:
        return f"line {line}: a ```{fmt} block must be tagged with one of {sorted(EXAMPLE_KINDS)}"
    attrs: dict[str, str] = {}
    for word in words[2:]:
        key, sep, value = word.partition("=")
        if not sep:
            return f"line {line}: tag {word!r} is not key=value"
        attrs[key] = value
    text = "\n".join(body)
    try:
        if fmt == "json":
            value = json.loads(text)
            frame = msgspec.msgpack.encode(value)
            return Example(words[1], attrs, "json", value, frame, line)
        frame = bytes.fromhex("".join(text.split()))
        value = msgspec.msgpack.decode(frame)
        return Example(words[1], attrs, "hex", value, frame, line)
    except (ValueError, msgspec.DecodeError) as exc:
        return f"line {line}: example does not parse: {exc}"


def parse(text: str) -> Doc:
    lines = text.splitlines()
    sections: list[Section] = [Section(title="", level=0, line=0)]
    examples: list[Example] = []
    tables: list[Table] = []
    problems: list[str] = []
    links: list[tuple[int, str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        number = index + 1
        fence = _FENCE.match(line)
        if fence:
            info = fence.group(1).strip()
            end = index + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if end == len(lines):
                problems.append(f"line {number}: code block never closed")
            body = lines[index + 1 : end]
            if info.split()[:1] in (["json"], ["hex"]):
                parsed = _parse_example(info, body, number)
                if isinstance(parsed, str):
                    problems.append(parsed)
                else:
                    examples.append(parsed)
                    sections[-1].examples.append(parsed)
            index = end + 1
            continue
        heading = _HEADING.match(line)
        if heading:
            sections.append(
                Section(title=heading.group(2), level=len(heading.group(1)), line=number)
            )
            index += 1
            continue
        if line.lstrip().startswith("|"):
            start = index
            block: list[str] = []
            while index < len(lines) and lines[index].lstrip().startswith("|"):
                block.append(lines[index])
                index += 1
            if len(block) < 2 or not re.fullmatch(r"[\s|:\-]+", block[1]):
                problems.append(f"line {start + 1}: a table needs a header and a separator row")
                continue
            table = Table(
                line=start + 1,
                header=tuple(clean_cell(c) for c in _split_row(block[0])),
                rows=tuple(_split_row(row) for row in block[2:]),
            )
            tables.append(table)
            sections[-1].tables.append(table)
            for row_line in block:
                links.extend((start + 1, target) for _, target in _LINK.findall(row_line))
            continue
        sections[-1].text.append(line)
        links.extend((number, target) for _, target in _LINK.findall(line))
        index += 1
    _nest(sections, len(lines))
    return Doc(sections[1:], examples, tables, problems, links)


def _nest(sections: list[Section], total: int) -> None:
    """Give each section its end line, and to each its sub-sections' content."""
    for position, section in enumerate(sections):
        section.end = total + 1
        for later in sections[position + 1 :]:
            if later.level <= section.level:
                section.end = later.line
                break
    for position, section in enumerate(sections):
        for inner in sections[position + 1 :]:
            if inner.line >= section.end:
                break
            section.examples.extend(inner.examples)
            section.tables.extend(inner.tables)
            section.text.extend(inner.text)


def load() -> Doc:
    return parse(DOC_PATH.read_text(encoding="utf-8"))


def anchors(doc: Doc) -> set[str]:
    seen: dict[str, int] = {}
    result: set[str] = set()
    for section in doc.sections:
        base = slug(section.title)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


# --- rendering the real types as the document writes them ------------------------------

#: Types the document names instead of spelling out; each is distinct from the others.
NAMED_TYPES: dict[str, Any] = {
    "ConversationId": ptypes.ConversationId,
    "Phone": ptypes.Phone,
    "LoginCode": ptypes.LoginCode,
    "ContentKind": ptypes.ContentKind,
    "Role": ptypes.Role,
    "AssignableRole": ptypes.AssignableRole,
    "ConversationKind": ids.ConversationKind,
    "SystemAction": events.SystemAction,
    "ContactState": replies.ContactState,
    "SyncEvent": events.SyncEvent,
    "DingId": ding.DingId,
    "DingCursor": ding.DingCursor,
    "DingChannel": ding.DingChannel,
    "DingStepState": ding.DingStepState,
    "DingState": ding.DingState,
    "LiveId": live.LiveId,
    "SignalKind": live.SignalKind,
    "LiveRole": live.LiveRole,
    "LiveEndReason": live.LiveEndReason,
}


def _number(value: int) -> str:
    return "2^53-1" if value == limits.MAX_SAFE_INT else str(value)


def _constraints(metas: tuple[Any, ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for meta in metas:
        if not isinstance(meta, msgspec.Meta):
            raise AssertionError(f"unexpected annotation {meta!r}")
        for name in ("ge", "le", "gt", "lt", "min_length", "max_length", "pattern"):
            value = getattr(meta, name)
            if value is not None:
                found[name] = value
    if "gt" in found or "lt" in found:
        raise AssertionError("gt/lt bounds: extend render_type")
    return found


def _range(low: int | None, high: int | None, unit: str) -> str:
    if low is not None and high is not None:
        return f"{_number(low)}..{_number(high)}{unit}"
    if high is not None:
        return f"max {_number(high)}{unit}"
    if low is not None:
        return f"min {_number(low)}{unit}"
    return ""


def render_type(tp: Any, *, use_names: bool = True) -> str:
    """The type as the document's tables write it."""
    if use_names:
        for name, named in NAMED_TYPES.items():
            if tp == named:
                return name
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *metas = typing.get_args(tp)
        found = _constraints(tuple(metas))
        base_origin = typing.get_origin(base)
        if base is int:
            low, high = found.get("ge"), found.get("le")
            if low is not None and high is not None:
                return f"int {_number(low)}..{_number(high)}"
            if low is not None:
                return f"int >= {_number(low)}"
            return f"int <= {_number(high)}" if high is not None else "int"
        if base is str:
            text = "string"
            length = _range(found.get("min_length"), found.get("max_length"), " chars")
            if length:
                text += f" ({length})"
            if "pattern" in found:
                text += f" matching {found['pattern']}"
            return text
        if base_origin is list:
            text = "list of " + render_type(typing.get_args(base)[0])
            length = _range(found.get("min_length"), found.get("max_length"), " items")
            return f"{text} ({length})" if length else text
        raise AssertionError(f"no rendering for {tp!r}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        parts = [render_type(a) for a in args if a is not type(None)]
        if len(parts) < len(args):
            parts.append("null")
        return " or ".join(parts)
    if origin is Literal:
        return " or ".join(json.dumps(v) for v in typing.get_args(tp))
    if origin is list:
        return "list of " + render_type(typing.get_args(tp)[0])
    simple = {bool: "bool", int: "int", float: "float", str: "string", type(None): "null"}
    if tp in simple:
        return simple[tp]
    if tp is Any:
        return "any"
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return struct_key(tp)
    raise AssertionError(f"no rendering for {tp!r}")


def struct_key(cls: type[msgspec.Struct]) -> str:
    """How the document names a struct: an event by its ``op``, anything else by name."""
    tag = cls.__struct_config__.tag
    if isinstance(tag, str) and tag.startswith("ev."):
        return tag
    return cls.__name__


def render_default(info: msgspec.structs.FieldInfo) -> str:
    if info.required:
        return "required"
    if info.default_factory is not msgspec.NODEFAULT:
        return json.dumps(info.default_factory())
    return json.dumps(info.default)


def field_rows(cls: type[msgspec.Struct], *, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``{wire name: (type text, default text)}`` for the struct's fields."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return {
        f.encode_name: (render_type(hints[f.name]), render_default(f))
        for f in msgspec.structs.fields(cls)
        if f.encode_name not in skip
    }


def structs_in(tp: Any) -> set[type[msgspec.Struct]]:
    """Every struct class named anywhere inside a type annotation."""
    found: set[type[msgspec.Struct]] = set()
    stack = [tp]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, msgspec.Struct):
            found.add(item)
        stack.extend(a for a in typing.get_args(item) if not isinstance(a, msgspec.Meta))
    return found


def reachable_structs(roots: set[type[msgspec.Struct]]) -> set[type[msgspec.Struct]]:
    """The roots and every struct their fields name, transitively."""
    seen: set[type[msgspec.Struct]] = set()
    todo = list(roots)
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for hint in typing.get_type_hints(cls, include_extras=True).values():
            todo.extend(structs_in(hint) - seen)
    return seen
