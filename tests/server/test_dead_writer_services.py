"""Background services while a database's writer thread is dead (``storage/sqlite/writer.py``):
every write to it is refused with ``StoreUnavailable`` until a restart. The server must stay
up (reads served, writes refused with 4004, ``/healthz`` 503), and each background service
must log the refusal once, back off and retry, never end the server nor spin.

The writer is killed the way ``tests/storage/test_sqlite_writer.py`` does it (a bug in
handing a batch back), in the real server (``serve``) on SQLite. Waits are on events;
``fail_after`` bounds each test. The backoff itself is checked on trio's autojump clock.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from protocol import ding as pd
from protocol import requests as rq
from protocol.errors import ErrorCode
from protocol.ids import direct_conversation_id
from server import background
from server.app import RunningServer, serve
from server.background import Nudge, run_rounds
from server.config import Config
from server.connection import Connection
from server.notify.memory import MemoryNotifier
from storage.errors import StoreUnavailable
from storage.moderation import NewAct
from storage.sqlite.writer import SqliteWriter
from tests.server.routers import call, connect, login

_phones = itertools.count(1)
_rids = itertools.count(100)


class WriterBug(Exception):
    pass


def outage_logs(caplog: pytest.LogCaptureFixture, job: str) -> list[logging.LogRecord]:
    """The ERROR records of ``job``'s refused writes (``server.background.Outage``)."""
    return [
        r
        for r in caplog.records
        if r.name == "server.background"
        and r.levelno == logging.ERROR
        and getattr(r, "job", None) == job
    ]


@asynccontextmanager
async def sqlite_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, notifier: MemoryNotifier, **overrides: Any
) -> AsyncIterator[tuple[RunningServer, dict[str, SqliteWriter]]]:
    """The real server on SQLite with its metrics port, and the writer of each database by
    file name. Shut down on exit; whatever ended the server is raised by the nursery."""
    writers: dict[str, SqliteWriter] = {}
    start = SqliteWriter._start

    def recording_start(writer: SqliteWriter) -> None:
        writers[writer._name] = writer
        start(writer)

    monkeypatch.setattr(SqliteWriter, "_start", recording_start)
    # The real clock runs here: short backoffs, so that a few retries take milliseconds.
    monkeypatch.setattr(background, "RETRY_FIRST_SECONDS", 0.001)
    config = Config(
        host="127.0.0.1", port=0, metrics_port=0, data_dir=tmp_path / "data", store="sqlite"
    ).with_overrides(**overrides)
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
        yield running, writers
        running.shutdown()


async def kill(writer: SqliteWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill ``writer``'s thread: a bug in handing a batch back (the next write's)."""

    def broken_hand_back(*args: object) -> None:
        raise WriterBug("bug in _hand_back")

    monkeypatch.setattr(writer, "_hand_back", broken_hand_back)
    with contextlib.suppress(StoreUnavailable):
        await writer.run("kill", lambda conn: None)
    assert writer.died


async def healthz(port: int | None) -> tuple[int, bytes]:
    assert port is not None
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def new_user(running: RunningServer) -> tuple[int, Connection]:
    conn = connect(4096)
    return await login(running.router, conn, f"+1777{next(_phones):07d}"), conn


async def ok(running: RunningServer, conn: Connection, request: rq.Request) -> dict[str, Any]:
    reply = await call(running.router, conn, request)
    assert reply["op"] == "ok", reply
    result: dict[str, Any] = reply["result"]
    return result


async def assert_still_serving(running: RunningServer, database: str) -> None:
    """The server answers: /healthz says which writer stopped, a request is answered."""
    assert await healthz(running.metrics_port) == (
        503,
        f"unavailable: the writer of {database} stopped; writes to it are refused\n".encode(),
    )
    _, conn = await new_user(running)  # personal.db still takes writes
    await ok(running, conn, rq.Ping(rid=next(_rids)))


class Counted:
    """Wraps one store method of one store object and counts its refused calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: object, name: str) -> None:
        self.refused = 0
        self._changed = trio.Event()
        real = getattr(store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await real(*args, **kwargs)
            except StoreUnavailable:
                self.refused += 1
                self._changed.set()
                self._changed = trio.Event()
                raise

        monkeypatch.setattr(store, name, counted)

    async def wait_refused(self, count: int = 3) -> None:
        """Until ``count`` calls were refused."""
        while self.refused < count:
            await self._changed.wait()


@pytest.mark.parametrize(
    ("database", "domain"), [("cross.db", "cross"), ("organisation-conversations.db", "org")]
)
async def test_the_ding_relay_outlives_its_dead_writer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    database: str,
    domain: str,
) -> None:
    """Each DING store's relay claims its outbox (a write) every second: refused, it used
    to end the server. Now it backs off and logs the outage once."""
    with trio.fail_after(30):
        async with sqlite_server(tmp_path, monkeypatch, MemoryNotifier()) as (running, writers):
            relay = running.ctx.ding.relays[domain]
            claims = Counted(monkeypatch, relay._store, "claim_outbox")
            await kill(writers[database], monkeypatch)
            relay.wake()
            await claims.wait_refused()
            await assert_still_serving(running, database)
    assert len(outage_logs(caplog, f"DING relay ({domain})")) == 1


class GatedNotifier(MemoryNotifier):
    """Holds every SMS until ``release`` is set; ``entered`` once one is held."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = trio.Event()
        self.release = trio.Event()

    async def send_sms(self, *, phone: str, text: str, idempotency_key: str) -> None:
        self.entered.set()
        await self.release.wait()
        await super().send_sms(phone=phone, text=text, idempotency_key=idempotency_key)


async def test_a_step_sent_while_the_writer_dies_does_not_end_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider took an SMS step, then recording that (``outbox_sent``) was refused: the
    relay's worker used to end the server. Now it retries with backoff until shutdown, and
    the SMS is not sent again meanwhile."""
    notifier = GatedNotifier()
    with trio.fail_after(30):
        async with sqlite_server(tmp_path, monkeypatch, notifier) as (running, writers):
            alice, alice_conn = await new_user(running)
            bob, _ = await new_user(running)
            conv = direct_conversation_id(alice, bob)
            content = rq.Content(text="hi")
            send = rq.MsgSend(rid=next(_rids), conv=conv, cmid="m1", content=content)
            await ok(running, alice_conn, send)
            ding = pd.DingSend(
                rid=next(_rids),
                cmid="d1",
                recipients=[bob],
                text="the build is on fire",
                plan=pd.DingPlan(sms_after_s=0),
            )
            await ok(running, alice_conn, ding)
            await notifier.entered.wait()
            records = Counted(monkeypatch, running.ctx.ding.relay._store, "outbox_sent")
            await kill(writers["cross.db"], monkeypatch)
            notifier.release.set()
            await records.wait_refused()
            await assert_still_serving(running, "cross.db")
            # Reads of cross.db are served; its writes are refused with 4004.
            await ok(running, alice_conn, rq.MsgHistory(rid=next(_rids), conv=conv))
            again = rq.MsgSend(rid=next(_rids), conv=conv, cmid="m2", content=content)
            refused = await call(running.router, alice_conn, again)
            assert refused["op"] == "error" and refused["code"] == ErrorCode.UNAVAILABLE
    assert len(notifier.sms) == 1
    assert len(outage_logs(caplog, "DING relay (cross)")) == 1


async def test_other_services_log_a_dead_writer_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The last-seen writer, the moderation watcher and the DING timers already survived
    a refused write, but logged every attempt (each second, each poll): now once."""
    with trio.fail_after(30):
        async with sqlite_server(
            tmp_path, monkeypatch, MemoryNotifier(), moderation_poll_seconds=0.01
        ) as (running, writers):
            ctx = running.ctx
            alice, alice_conn = await new_user(running)
            bob, _ = await new_user(running)
            conv = direct_conversation_id(alice, bob)
            send = rq.MsgSend(rid=next(_rids), conv=conv, cmid="m1", content=rq.Content(text="x"))
            seq = (await ok(running, alice_conn, send))["seq"]
            recalls = Counted(monkeypatch, ctx.conversations(conv), "recall")
            await kill(writers["cross.db"], monkeypatch)
            await kill(writers["personal.db"], monkeypatch)
            # moderation.db still takes writes: an operator removes the message; applying
            # it here (a recall in cross.db) is refused, poll after poll.
            act = NewAct(
                action="remove",
                operator="op",
                reason="spam",
                conv_id=conv,
                seq=seq,
                created_at=ctx.clock.now_ms(),
            )
            await ctx.stores.moderation.record_act(act)
            await recalls.wait_refused()
            for _ in range(3):
                ctx.last_seen.note(1, now=ctx.clock.now_ms())
                await ctx.last_seen.flush()
            # A DING timer falls due: handing its step over (a write) is refused. Each new
            # timer due at once wakes the scheduler from its retry wait.
            hand_overs = Counted(monkeypatch, ctx.ding.store, "hand_over")
            for step_id in (1, 2, 3):
                ctx.ding.scheduler.schedule(0, ("cross", step_id))
                await hand_overs.wait_refused(step_id)
    assert len(outage_logs(caplog, "moderation watcher")) == 1
    assert len(outage_logs(caplog, "last-seen times")) == 1
    assert len(outage_logs(caplog, "DING timers")) == 1
    noisy = (
        "moderation log unreadable",
        "writing last-seen times failed",
        "timers failed to fire",
    )
    assert not [r for r in caplog.records if r.getMessage().startswith(noisy)]


async def test_refused_rounds_back_off_and_are_logged_once_per_outage(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """``run_rounds`` (the outbox relay, dissolutions, account erasures): a round whose
    write is refused is not retried at every nudge nor every ``every`` seconds, but after
    a doubling wait (capped), and the outage is logged once, its end once."""
    attempts = 0
    refusing = True

    async def round_() -> None:
        nonlocal attempts
        attempts += 1
        if refusing:
            raise StoreUnavailable("the writer of x.db stopped", stored=False)

    nudge = Nudge()
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_rounds, "test job", round_, nudge, every=1.0))
            for _ in range(600):  # nudged every second for ten minutes
                nudge()
                await trio.sleep(1)
            # Waits of 1, 2, 4 ... 32 s, then 60 s: 15 rounds in 600 s, not 600.
            assert attempts <= 20
            refusing = False
            await trio.sleep(61)
            assert len(outage_logs(caplog, "test job")) == 1
            assert any(
                r.getMessage() == "test job: writes go through again" for r in caplog.records
            )
            refusing = True  # a new outage is logged again
            nudge()
            await trio.sleep(1)
            assert len(outage_logs(caplog, "test job")) == 2
            # Cancelled in the middle of a backoff: it ends at once.
            before = trio.current_time()
            nursery.cancel_scope.cancel()
        assert trio.current_time() == before
