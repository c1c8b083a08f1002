"""The Notifier seam: one conformance suite for every backend (house habit 7), then the
outbox file's own guarantees (mode 0600, O_APPEND, readable back for ``rivet outbox``)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from msgspec import convert

from server.clock import ManualClock
from server.notify import (
    CallRecord,
    LoginCodeRecord,
    MemoryNotifier,
    Notifier,
    NotifyError,
    NotifyRecord,
    OutboxNotifier,
    PushRecord,
    SmsRecord,
    outbox_path,
    read_outbox,
)
from server.notify.webhook import WebhookNotifier
from tests.webhook_gateway import Gateway

ALICE = "+8613800000001"
BOB = "+8613800000002"


@dataclass
class Backend:
    notifier: Notifier
    recorded: Callable[[], list[NotifyRecord]]
    clock: ManualClock


@pytest.fixture(params=["memory", "outbox", "webhook"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path, nursery: trio.Nursery) -> Backend:
    clock = ManualClock()
    if request.param == "memory":
        memory = MemoryNotifier(clock=clock)
        return Backend(memory, lambda: list(memory.records), clock)
    if request.param == "webhook":
        # What a gateway receives, read back as the records the other backends keep.
        gateway = Gateway()
        await nursery.start(gateway.serve)
        webhook = WebhookNotifier(gateway.url, secret="s", clock=clock)
        return Backend(
            webhook, lambda: [convert(r.json, NotifyRecord) for r in gateway.received], clock
        )
    outbox = OutboxNotifier(tmp_path, clock=clock)
    return Backend(outbox, lambda: read_outbox(outbox.path), clock)


# --- conformance: every backend ---------------------------------------------------------------


async def test_conformance_login_code_is_recorded(backend: Backend) -> None:
    await backend.notifier.send_login_code(phone=ALICE, code="012345")
    assert backend.recorded() == [
        LoginCodeRecord(time=backend.clock.now_ms(), phone=ALICE, code="012345")
    ]


async def test_conformance_m3_push_is_recorded(backend: Backend) -> None:
    await backend.notifier.push(user_id=7, device_id=3, title="Bob", body="hi", conv="d:2:7")
    assert backend.recorded() == [
        PushRecord(
            time=backend.clock.now_ms(),
            user_id=7,
            device_id=3,
            title="Bob",
            body="hi",
            conv="d:2:7",
        )
    ]


async def test_conformance_g1_sms_and_call_carry_their_idempotency_key(backend: Backend) -> None:
    await backend.notifier.send_sms(phone=ALICE, text="DING from Bob", idempotency_key="ding:1:a")
    backend.clock.advance(60)
    await backend.notifier.place_call(phone=ALICE, text="DING from Bob", idempotency_key="ding:1:b")
    start = backend.clock.now_ms() - 60_000
    assert backend.recorded() == [
        SmsRecord(time=start, phone=ALICE, text="DING from Bob", idempotency_key="ding:1:a"),
        CallRecord(
            time=start + 60_000, phone=ALICE, text="DING from Bob", idempotency_key="ding:1:b"
        ),
    ]


async def test_conformance_every_accepted_call_is_recorded_in_order(backend: Backend) -> None:
    """At least once: a retry with the same key is recorded again; consumers dedupe."""
    await backend.notifier.send_sms(phone=ALICE, text="x", idempotency_key="k")
    await backend.notifier.send_login_code(phone=BOB, code="999999")
    await backend.notifier.send_sms(phone=ALICE, text="x", idempotency_key="k")
    assert [record.kind for record in backend.recorded()] == ["sms", "login_code", "sms"]


async def test_conformance_calls_are_checkpoints(backend: Backend) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await backend.notifier.push(user_id=1, device_id=1, title="t", body="b", conv="s:1")


async def test_conformance_unicode_text_round_trips(backend: Backend) -> None:
    await backend.notifier.push(user_id=1, device_id=1, title="王小明", body="开会 🚀", conv="g:1")
    (record,) = backend.recorded()
    assert isinstance(record, PushRecord)
    assert (record.title, record.body) == ("王小明", "开会 🚀")


# --- MemoryNotifier -------------------------------------------------------------------------


async def test_memory_notifier_keeps_lists_by_kind() -> None:
    memory = MemoryNotifier(clock=ManualClock())
    await memory.send_login_code(phone=ALICE, code="111111")
    await memory.send_login_code(phone=BOB, code="222222")
    await memory.send_login_code(phone=ALICE, code="333333")
    await memory.push(user_id=1, device_id=1, title="t", body="b", conv="s:1")
    await memory.send_sms(phone=ALICE, text="t", idempotency_key="k1")
    await memory.place_call(phone=ALICE, text="t", idempotency_key="k2")
    assert [r.code for r in memory.login_codes] == ["111111", "222222", "333333"]
    assert len(memory.pushes) == len(memory.sms) == len(memory.calls) == 1
    assert len(memory.records) == 6
    assert memory.last_code(ALICE) == "333333"
    assert memory.last_code("+8613800000009") is None
    assert memory.statistics() == {"recorded": 6}


# --- OutboxNotifier: the file ---------------------------------------------------------------


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def test_a2_outbox_file_is_created_mode_0600(tmp_path: Path, loose_umask: None) -> None:
    path = outbox_path(tmp_path)
    assert path == tmp_path / "outbox.jsonl" == OutboxNotifier(tmp_path).path
    await OutboxNotifier(tmp_path).send_login_code(phone=ALICE, code="123456")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_a2_outbox_tightens_a_looser_existing_file(tmp_path: Path) -> None:
    path = outbox_path(tmp_path)
    path.write_text("")
    os.chmod(path, 0o644)
    await OutboxNotifier(tmp_path).send_login_code(phone=ALICE, code="123456")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_outbox_appends_one_json_line_per_notification(tmp_path: Path) -> None:
    path = outbox_path(tmp_path)
    clock = ManualClock()
    outbox = OutboxNotifier(tmp_path, clock=clock)
    await outbox.send_login_code(phone=ALICE, code="123456")
    await outbox.send_sms(phone=BOB, text="DING", idempotency_key="ding:9")
    lines = path.read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"kind": "login_code", "time": clock.now_ms(), "phone": ALICE, "code": "123456"},
        {
            "kind": "sms",
            "time": clock.now_ms(),
            "phone": BOB,
            "text": "DING",
            "idempotency_key": "ding:9",
        },
    ]
    assert outbox.statistics() == {"written": 2}


async def test_a3_outbox_appends_to_what_is_already_there(tmp_path: Path) -> None:
    path = outbox_path(tmp_path)
    await OutboxNotifier(tmp_path).send_login_code(phone=ALICE, code="111111")
    await OutboxNotifier(tmp_path).send_login_code(phone=ALICE, code="222222")  # a restart
    assert [r.code for r in read_outbox(path) if isinstance(r, LoginCodeRecord)] == [
        "111111",
        "222222",
    ]


async def test_outbox_concurrent_writes_never_interleave(tmp_path: Path) -> None:
    path = outbox_path(tmp_path)
    outbox = OutboxNotifier(tmp_path)
    body = "x" * 5000

    async def push(device_id: int) -> None:
        await outbox.push(user_id=1, device_id=device_id, title="t", body=body, conv="s:1")

    async with trio.open_nursery() as nursery:
        for device_id in range(1, 41):
            nursery.start_soon(push, device_id)
    records = [r for r in read_outbox(path) if isinstance(r, PushRecord)]
    assert len(path.read_bytes().splitlines()) == 40
    assert sorted(r.device_id for r in records) == list(range(1, 41))
    assert all(r.body == body for r in records)


async def test_a2_outbox_failure_is_a_notify_error_without_the_code(tmp_path: Path) -> None:
    with pytest.raises(NotifyError) as caught:
        await OutboxNotifier(tmp_path / "missing-dir").send_login_code(phone=ALICE, code="654321")
    assert caught.value.retryable
    assert "654321" not in str(caught.value)
    assert caught.value.__cause__ is None


async def test_a2_outbox_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    path = outbox_path(tmp_path)
    path.symlink_to(target)
    with pytest.raises(NotifyError):
        await OutboxNotifier(tmp_path).send_login_code(phone=ALICE, code="654321")
    assert target.read_text() == ""


# --- read_outbox (rivet outbox) --------------------------------------------------------------


@pytest.fixture
async def filled(tmp_path: Path) -> Path:
    path = outbox_path(tmp_path)
    clock = ManualClock()
    outbox = OutboxNotifier(tmp_path, clock=clock)
    await outbox.send_login_code(phone=ALICE, code="100001")
    clock.advance(1)
    await outbox.send_login_code(phone=BOB, code="200002")
    clock.advance(1)
    await outbox.push(user_id=1, device_id=1, title="t", body="b", conv="s:1")
    clock.advance(1)
    await outbox.send_sms(phone=ALICE, text="DING", idempotency_key="k")
    clock.advance(1)
    await outbox.send_login_code(phone=ALICE, code="100003")
    return path


def codes(records: list[NotifyRecord]) -> list[str]:
    return [r.code for r in records if isinstance(r, LoginCodeRecord)]


async def test_read_outbox_filters(filled: Path) -> None:
    assert [r.kind for r in read_outbox(filled)] == [
        "login_code",
        "login_code",
        "push",
        "sms",
        "login_code",
    ]
    assert codes(read_outbox(filled, kind="login_code")) == ["100001", "200002", "100003"]
    assert [r.kind for r in read_outbox(filled, phone=ALICE)] == ["login_code", "sms", "login_code"]
    assert codes(read_outbox(filled, kind="login_code", phone=ALICE, last=1)) == ["100003"]
    assert codes(read_outbox(filled, kind="login_code", last=2)) == ["200002", "100003"]
    assert read_outbox(filled, kind="call") == []
    assert read_outbox(filled, last=0) == []
    times = [r.time for r in read_outbox(filled)]
    assert times == sorted(times)


async def test_read_outbox_skips_a_torn_line_and_unknown_kinds(filled: Path) -> None:
    data = await trio.Path(filled).read_bytes()
    tail = b'{"kind":"fax","time":1,"number":"1"}\n\n{"kind":"login_code","ti'
    await trio.Path(filled).write_bytes(data + tail)
    assert len(read_outbox(filled)) == 5


def test_read_outbox_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_outbox(tmp_path / "nothing.jsonl") == []
    with pytest.raises(ValueError):
        read_outbox(tmp_path / "nothing.jsonl", last=-1)
