"""C1 moderation end to end: users report content and accounts; an operator reviews the
reports and hides or removes content and suspends accounts with ``rivet moderate``, in
another process, while the server runs; every act is in the log; suspended accounts' open
connections close (4005) and their logins are refused (2005)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from client import RivetClient, RivetError
from client.connection import ConnectionLost
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from protocol.events import RecallEvent
from protocol.ids import direct_conversation_id
from protocol.moderation import Report
from tests.e2e.conftest import Harness
from tests.e2e.processes import RIVET, create_users, rivet_server


async def moderate(data: Path, *args: str) -> list[dict[str, Any]]:
    done = await trio.run_process(
        [*RIVET, "moderate", *args, "--data-dir", str(data)], capture_stdout=True
    )
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


async def test_c1_operators_act_on_reports_and_a_running_server_applies_them(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    alice, bob, carol = create_users(data, 3)
    assert alice.user_id and bob.user_id and carol.user_id
    async with rivet_server(data, "--moderation-poll-seconds", "0.2") as (_, url):
        async with RivetClient.connect(url, bob) as b:
            group = await b.request(
                rq.GroupCreate(
                    rid=0, cmid="g", title="market", members=[alice.user_id, carol.user_id]
                )
            )
            conv = group.conv.conv
            spam = await b.send(conv, "cheap watches at example.test")
            rude = await b.send(conv, "something illegal")
        async with RivetClient.connect(url, alice) as a, RivetClient.connect(url, carol) as c:
            reported = await a.request(
                Report(rid=0, conv=conv, seq=spam.seq, reason="spam", note="ads again")
            )
            again = await a.request(Report(rid=0, conv=conv, seq=spam.seq, reason="spam"))
            assert (again.report_id, again.duplicate) == (reported.report_id, True)
            about_bob = await c.request(Report(rid=0, user=bob.user_id, reason="abuse"))

            reports = await moderate(data, "reports")
            assert [(r["report_id"], r["reason"], r["evidence_text"]) for r in reports] == [
                (reported.report_id, "spam", "cheap watches at example.test"),
                (about_bob.report_id, "abuse", None),
            ]
            assert reports[0]["target_user"] == bob.user_id

            # hide: every member is told live (ev.recall by 0); the platform keeps a copy.
            (hidden,) = await moderate(
                data, "hide", "--conv", conv, "--seq", str(spam.seq), "--reason", "spam",
                "--report", str(reported.report_id), "--operator", "ops-anna",
            )  # fmt: skip
            assert hidden["evidence_text"] == "cheap watches at example.test"
            for client in (a, c):
                with trio.fail_after(5):
                    event = await client.next_event()
                    while not isinstance(event, RecallEvent):
                        event = await client.next_event()
                assert (event.conv, event.seq, event.by) == (conv, spam.seq, 0)
            (removed,) = await moderate(
                data, "remove", "--conv", conv, "--seq", str(rude.seq), "--reason", "illegal"
            )
            assert removed["evidence_text"] is None
            history = await a.request(rq.MsgHistory(rid=0, conv=conv))
            by_seq = {m.seq: m for m in history.messages}
            assert by_seq[spam.seq].recalled and by_seq[spam.seq].content is None
            assert by_seq[rude.seq].recalled and by_seq[rude.seq].content is None

        # suspend: bob's open connection closes with 4005, and bob cannot come back.
        async with RivetClient.connect(url, bob) as b:
            await moderate(
                data, "suspend", "--user", str(bob.user_id), "--reason", "spam",
                "--report", str(about_bob.report_id),
            )  # fmt: skip
            with trio.fail_after(5):
                await b.conn.closed.wait()
            assert b.conn.close_code == CloseCode.ACCOUNT_SUSPENDED
        with pytest.raises(RivetError) as refused:
            async with RivetClient.connect(url, bob):
                pass
        assert refused.value.code == ErrorCode.FORBIDDEN
        await moderate(data, "unsuspend", "--user", str(bob.user_id), "--reason", "appeal won")
        async with RivetClient.connect(url, bob) as b:
            assert (await b.request(rq.Ping(rid=0))).server_time > 0

    log = await moderate(data, "log")
    assert [(a["action"], a["target_user"]) for a in log] == [
        ("hide", bob.user_id),
        ("remove", bob.user_id),
        ("suspend", bob.user_id),
        ("unsuspend", bob.user_id),
    ]
    assert log[0]["operator"] == "ops-anna" and log[0]["reports"] == [reported.report_id]
    closed = await moderate(data, "reports", "--status", "actioned")
    assert {r["report_id"] for r in closed} == {reported.report_id, about_bob.report_id}
    assert await moderate(data, "reports") == []


async def test_c1_acts_on_things_that_do_not_exist_fail_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    create_users(data, 1)
    for args in (
        ("hide", "--conv", "g:404", "--seq", "1", "--reason", "x"),
        ("suspend", "--user", "404", "--reason", "x"),
        ("dismiss", "--report", "404", "--reason", "x"),
    ):
        done = await trio.run_process(
            [*RIVET, "moderate", *args, "--data-dir", str(data)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 1 and b"no " in done.stderr, args
    assert await moderate(data, "log") == []


async def test_c1_what_users_may_report(harness: Harness) -> None:
    alice, bob, eve = [await harness.new_user() for _ in range(3)]
    assert alice.user_id and bob.user_id
    conv = direct_conversation_id(alice.user_id, bob.user_id)
    async with RivetClient.connect(harness.url, alice) as a:
        mine = await a.send(conv, "hello")
        cases = [
            (Report(rid=0, reason="spam"), ErrorCode.INVALID_FIELD),
            (Report(rid=0, reason="spam", user=bob.user_id, conv=conv, seq=1), 1002),
            (Report(rid=0, reason="spam", conv=conv), ErrorCode.INVALID_FIELD),
            (Report(rid=0, reason="spam", conv=conv, seq=mine.seq), ErrorCode.INVALID_STATE),
            (Report(rid=0, reason="spam", conv=conv, seq=99), ErrorCode.NOT_FOUND),
            (Report(rid=0, reason="spam", user=alice.user_id), ErrorCode.INVALID_STATE),
            (Report(rid=0, reason="spam", user=987654), ErrorCode.NOT_FOUND),
        ]
        for request, code in cases:
            with pytest.raises(RivetError) as caught:
                await a.request(request)
            assert caught.value.code == code, request
    async with RivetClient.connect(harness.url, eve) as e:
        with pytest.raises(RivetError) as caught:
            await e.request(Report(rid=0, reason="spam", conv=conv, seq=mine.seq))
        assert caught.value.code == ErrorCode.NOT_FOUND
    async with RivetClient.connect(harness.url, bob) as b:
        report = await b.request(Report(rid=0, reason="abuse", conv=conv, seq=mine.seq))
        assert report.report_id == 1 and not report.duplicate
    stored = await harness.server.ctx.stores.moderation.get_report(1)
    assert stored is not None and stored.reporter == bob.user_id
    assert stored.target_user == alice.user_id and stored.evidence is not None


async def test_c1_a_suspended_account_cannot_log_in_with_a_code(harness: Harness) -> None:
    alice = await harness.new_user()
    assert alice.user_id
    personal = harness.server.ctx.stores.personal
    user = await personal.get_user(alice.user_id)
    assert user is not None
    await personal.set_suspended(alice.user_id, True)
    # A fresh code, as login.request_code would store it (its per-phone throttle aside).
    ctx = harness.server.ctx
    issued = ctx.credentials.codes.issue(phone=user.phone, now_ms=ctx.clock.now_ms())
    await personal.put_login_code(phone=user.phone, mac=issued.mac, expires_at=issued.expires_at)
    with pytest.raises(RivetError) as refused:
        await RivetClient.login(harness.url, phone=user.phone, code=issued.code)
    assert refused.value.code in (ErrorCode.FORBIDDEN, CloseCode.ACCOUNT_SUSPENDED)
    assert len(await personal.list_devices(alice.user_id)) == 1  # no new device registered
    with pytest.raises((RivetError, ConnectionLost)):
        async with RivetClient.connect(harness.url, alice):
            pass
