"""C2 without a network: which budget each op draws on, per-user budgets shared by a user's
connections, the flood rule, and the router's replies (rate_limited, then close 4051)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol import codec
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from server.config import Config
from server.ratelimit import KeyedLimiter
from server.router import Router
from server.throttle import Throttle, budget_of
from storage.memory import open_memory_stores
from tests.server.routers import build_router, call, connect, frames, login


def test_c2_each_op_draws_on_its_budget() -> None:
    assert budget_of("msg.send") == "message"
    assert budget_of("ding.send") == budget_of("ding.redding") == "ding"
    for op in ("ping", "typing", "presence.subscribe", "live.signal", "live.like"):
        assert budget_of(op) == "signal", op
    assert budget_of("report") == "report"
    for op in ("sync", "msg.history", "ding.get", "group.create"):
        assert budget_of(op) is None, op


def _throttle(**overrides: object) -> Throttle:
    config = Config().with_overrides(**overrides)
    limiter = KeyedLimiter(config.send_rate_per_second, config.send_burst)
    return Throttle(config, message_limiter=limiter)


def test_c2_a_users_budget_is_shared_by_all_their_connections() -> None:
    throttle = _throttle(signal_rate_per_second=1.0, signal_burst=4)
    admitted = [
        throttle.admit_op(conn_id, 7, "typing", now=0.0) is None for conn_id in (1, 2, 3, 4, 5)
    ]
    assert admitted == [True, True, True, True, False]
    refusal = throttle.admit_op(6, 7, "live.signal", now=0.0)
    assert refusal is not None and refusal.budget == "signal" and refusal.retry_after == 1.0
    assert throttle.admit_op(6, 8, "typing", now=0.0) is None  # another user
    assert throttle.admit_op(6, 7, "typing", now=1.0) is None  # refilled
    assert throttle.admit_op(1, None, "typing", now=0.0) is None  # not authenticated yet


def test_c2_every_frame_costs_the_connection_before_decoding() -> None:
    throttle = _throttle(request_rate_per_second=10.0, request_burst=3)
    results = [throttle.admit_frame(1, None, now=0.0) for _ in range(5)]
    assert [r is None for r in results] == [True, True, True, False, False]
    assert throttle.admit_frame(2, None, now=0.0) is None  # per connection
    throttle.forget(1)
    assert throttle.admit_frame(1, None, now=0.0) is None  # a new connection starts full


def test_c2_a_users_frames_share_one_budget_across_connections() -> None:
    throttle = _throttle(request_rate_per_second=10.0, request_burst=3)
    admitted = [throttle.admit_frame(conn_id, 7, now=0.0) is None for conn_id in (1, 2, 3, 4)]
    assert admitted == [True, True, True, False]
    assert throttle.admit_frame(5, 8, now=0.0) is None  # another user


def test_c2_reconnecting_does_not_reset_a_flooders_strikes() -> None:
    throttle = _throttle(request_rate_per_second=1.0, request_burst=1, flood_strikes=3)
    assert throttle.admit_frame(1, 7, now=0.0) is None
    first = [throttle.admit_frame(1, 7, now=0.0) for _ in range(4)]
    assert [r.flood for r in first if r is not None] == [False, False, False, True]
    throttle.forget(1)  # closed with 4051; the flooder comes back on a new connection
    again = throttle.admit_frame(2, 7, now=0.1)
    assert again is not None and again.flood


def test_c2_refusals_in_quick_succession_use_up_the_strikes() -> None:
    throttle = _throttle(request_rate_per_second=1.0, request_burst=1, flood_strikes=5)
    assert throttle.admit_frame(1, None, now=0.0) is None
    refusals = [throttle.admit_frame(1, None, now=0.0) for _ in range(6)]
    assert [r.flood for r in refusals if r is not None] == [False] * 5 + [True]


def test_c2_a_client_that_waits_as_told_is_never_closed() -> None:
    throttle = _throttle(request_rate_per_second=1.0, request_burst=1, flood_strikes=3)
    now, refused = 0.0, 0
    for _ in range(50):
        refusal = throttle.admit_frame(1, None, now)
        if refusal is not None:
            refused += 1
            assert not refusal.flood
            now += refusal.retry_after  # waits as told, then sends again at once
    assert refused == 25


@pytest.fixture
async def tight_router(tmp_path: Path) -> AsyncIterator[Router]:
    config = Config(
        store="memory",
        data_dir=tmp_path,
        request_rate_per_second=5,
        request_burst=20,
        flood_strikes=4,
    )
    async with open_memory_stores() as stores:
        yield build_router(config, stores)


async def test_c2_a_flood_of_empty_frames_gets_rate_limited_then_closed_4051(
    tight_router: Router,
) -> None:
    conn = connect()
    await login(tight_router, conn, "+15550000011")
    for _ in range(40):
        if conn.close_request is not None:
            break
        await tight_router.handle_frame(conn, b"")
    replies = frames(conn)
    codes = [r["code"] for r in replies]
    assert ErrorCode.MALFORMED in codes  # the empty frames inside the budget
    assert codes[-1] == ErrorCode.RATE_LIMITED and replies[-1]["retry_after"] > 0
    assert conn.close_request is not None and conn.close_request.code == CloseCode.FLOOD


async def test_c2_a_ping_flood_is_refused_with_its_rid(tight_router: Router) -> None:
    conn = connect()
    await login(tight_router, conn, "+15550000012")
    answers = [await call(tight_router, conn, rq.Ping(rid=100 + i)) for i in range(25)]
    refused = [a for a in answers if a["op"] == "error"]
    assert refused and all(a["code"] == ErrorCode.RATE_LIMITED for a in refused)
    assert [a["rid"] for a in answers] == [100 + i for i in range(25)]
    await tight_router.handle_frame(conn, codec.encode_request(rq.Ping(rid=999)))
    assert conn.close_request is not None and conn.close_request.code == CloseCode.FLOOD
