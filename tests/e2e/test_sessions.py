"""Sessions and credentials (A2) and the per-user send rate limit (C2), over the real
WebSocket: devices, token refresh rotation, logout_all, the handshake order, login codes."""

from __future__ import annotations

import pytest
import trio

from client import RivetClient
from client.connection import ConnectionLost, RivetConnection, RivetError
from protocol import replies
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode
from protocol.ids import direct_conversation_id
from protocol.version import PROTOCOL_VERSION
from tests.e2e.rig import Rig, rig_fixture, uid

SEND_RATE = 2.0
SEND_BURST = 3


# The real server with a clock we move and a low per-user send rate (C2).
rig = rig_fixture(
    "+1333",
    receipt_flush_seconds=0.05,
    send_rate_per_second=SEND_RATE,
    send_burst=SEND_BURST,
)


async def refused(conn: RivetConnection | RivetClient, request: rq.Request) -> RivetError:
    with pytest.raises(RivetError) as caught:
        await conn.request(request)
    assert not isinstance(caught.value, ConnectionLost), caught.value
    return caught.value


async def closed_with(conn: RivetConnection) -> int | None:
    with trio.fail_after(5):
        await conn.closed.wait()
    return conn.close_code


def hello(token: str | None = None) -> rq.Hello:
    return rq.Hello(rid=0, version=PROTOCOL_VERSION, token=token)


async def test_a2_devices_list(rig: Rig) -> None:
    bob_phone, bob = await rig.new_user("bob")
    tablet = await rig.new_device(bob_phone, "tablet")
    _, alice = await rig.new_user("alice")
    async with RivetClient.connect(rig.url, bob) as b:
        listed: replies.Devices = await b.request(rq.DevicesList(rid=0))
        assert [(d.device_id, d.name, d.current) for d in listed.devices] == [
            (bob.device_id, "phone", True),
            (tablet.device_id, "tablet", False),
        ]
        assert all(d.last_seen_at >= d.created_at for d in listed.devices)
    async with RivetClient.connect(rig.url, tablet) as t:
        listed = await t.request(rq.DevicesList(rid=0))
        assert [d.current for d in listed.devices] == [False, True]
    async with RivetClient.connect(rig.url, alice) as a:
        listed = await a.request(rq.DevicesList(rid=0))
        assert [d.device_id for d in listed.devices] == [alice.device_id]


async def test_a2_token_refresh_rotates_and_the_old_refresh_token_is_refused(rig: Rig) -> None:
    _, bob = await rig.new_user("bob")
    _, alice = await rig.new_user("alice")
    old_refresh, old_access = bob.refresh_token, bob.access_token
    assert old_refresh is not None and old_access is not None
    async with RivetClient.connect(rig.url, bob) as b:
        rig.clock.advance(1)  # access tokens are signed claims: a later one differs
        tokens: replies.Tokens = await b.request(rq.TokenRefresh(rid=0, refresh_token=old_refresh))
        assert tokens.refresh_token != old_refresh and tokens.access_token != old_access
        assert (tokens.session.user_id, tokens.session.device_id) == (uid(bob), bob.device_id)
        # Another device's refresh token cannot be used on this connection.
        assert alice.refresh_token is not None
        other = rq.TokenRefresh(rid=0, refresh_token=alice.refresh_token)
        assert (await refused(b, other)).code == ErrorCode.FORBIDDEN

    # The new access token authenticates; the new refresh token rotates once more.
    async with RivetConnection.open(rig.url) as conn:
        welcome: replies.HelloResult = await conn.request(hello(tokens.access_token))
        assert welcome.session is not None and welcome.session.user_id == uid(bob)
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        renewed: replies.Tokens = await conn.request(
            rq.TokenRefresh(rid=0, refresh_token=tokens.refresh_token)
        )
        assert renewed.session.device_id == bob.device_id
        # The refresh authenticated this connection.
        assert isinstance(await conn.request(rq.DevicesList(rid=0)), replies.Devices)
    # The first refresh token stopped working when it was rotated.
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        reuse = rq.TokenRefresh(rid=0, refresh_token=old_refresh)
        assert (await refused(conn, reuse)).code == ErrorCode.AUTH_FAILED


async def test_a2_logout_all_closes_every_connection_with_4004_and_revokes_tokens(
    rig: Rig,
) -> None:
    bob_phone, bob = await rig.new_user("bob")
    tablet = await rig.new_device(bob_phone, "tablet")
    _, alice = await rig.new_user("alice")
    old_access, old_refresh = bob.access_token, bob.refresh_token
    tablet_refresh = tablet.refresh_token
    assert old_access and old_refresh and tablet_refresh
    async with (
        RivetClient.connect(rig.url, bob) as b,
        RivetClient.connect(rig.url, bob) as b2,
        RivetClient.connect(rig.url, tablet) as t,
        RivetClient.connect(rig.url, alice) as a,
    ):
        done = await b.request(rq.LogoutAll(rid=0))
        assert isinstance(done, replies.Done)
        for client in (b, b2, t):
            assert await closed_with(client.conn) == CloseCode.SESSION_REVOKED
        # Other users are not affected.
        assert isinstance(await a.request(rq.Ping(rid=0)), replies.Pong)
        await a.send(direct_conversation_id(uid(alice), uid(bob)), "still here")

    for token in (old_access, tablet.access_token):
        async with RivetConnection.open(rig.url) as conn:
            error = await refused(conn, hello(token))
            assert error.code == ErrorCode.SESSION_REVOKED
    for refresh in (old_refresh, tablet_refresh):
        async with RivetConnection.open(rig.url) as conn:
            await conn.request(hello())
            error = await refused(conn, rq.TokenRefresh(rid=0, refresh_token=refresh))
            assert error.code in (ErrorCode.AUTH_FAILED, ErrorCode.SESSION_REVOKED)
    # Logging in again works.
    rig.clock.advance(31)
    fresh = await rig.login(bob_phone, "")
    async with RivetClient.connect(rig.url, fresh) as b:
        assert isinstance(await b.request(rq.Ping(rid=0)), replies.Pong)


async def test_a2_hello_with_a_bad_token_is_refused(rig: Rig) -> None:
    _, bob = await rig.new_user("bob")
    assert bob.access_token is not None
    tampered = bob.access_token[:-4] + ("AAAA" if not bob.access_token.endswith("AAAA") else "BBBB")
    for token in ("garbage", "v1.nokey.payload.sig", tampered):
        async with RivetConnection.open(rig.url) as conn:
            error = await refused(conn, hello(token))
            assert error.code == ErrorCode.AUTH_FAILED, token
            # The connection did not become authenticated.
            after = await refused(conn, rq.DevicesList(rid=0))
            assert after.code == ErrorCode.NOT_AUTHENTICATED
    async with RivetConnection.open(rig.url) as conn:
        await refused(conn, rq.Hello(rid=0, version=PROTOCOL_VERSION + 1))
        assert await closed_with(conn) == CloseCode.UNSUPPORTED_VERSION


async def test_a2_ops_before_hello_or_authentication_are_refused(rig: Rig) -> None:
    _, bob = await rig.new_user("bob")
    async with RivetConnection.open(rig.url) as conn:
        error = await refused(conn, rq.Ping(rid=0))
        assert error.code == ErrorCode.NOT_AUTHENTICATED
        assert await closed_with(conn) == CloseCode.PROTOCOL_VIOLATION
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        assert isinstance(await conn.request(rq.Ping(rid=0)), replies.Pong)  # allowed
        send = rq.MsgSend(
            rid=0, conv=f"s:{uid(bob)}", cmid="early", content=rq.Content(text="nope")
        )
        error = await refused(conn, send)
        assert error.code == ErrorCode.NOT_AUTHENTICATED
        assert await closed_with(conn) == CloseCode.PROTOCOL_VIOLATION
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        error = await refused(conn, rq.LogoutAll(rid=0))
        assert error.code == ErrorCode.NOT_AUTHENTICATED
    # Nothing was stored and nobody was logged out.
    async with RivetClient.connect(rig.url, bob) as b:
        page: replies.History = await b.request(rq.MsgHistory(rid=0, conv=f"s:{uid(bob)}"))
        assert page.messages == []


async def test_c2_per_user_send_rate_limit(rig: Rig) -> None:
    _, bob = await rig.new_user("bob")
    _, alice = await rig.new_user("alice")
    conv = direct_conversation_id(uid(alice), uid(bob))
    async with (
        RivetClient.connect(rig.url, bob) as b,
        RivetClient.connect(rig.url, bob) as b2,
        RivetClient.connect(rig.url, alice) as a,
    ):
        for i in range(SEND_BURST):
            await b.send(conv, f"burst {i}")
        with pytest.raises(RivetError) as limited:
            await b.send(conv, "one too many", cmid="limited")
        assert limited.value.code == ErrorCode.RATE_LIMITED and limited.value.retryable
        retry_after = limited.value.retry_after
        assert retry_after is not None and 0 < retry_after <= 1 / SEND_RATE
        # The limit is per user: Bob's other connection is limited too; Alice is not.
        with pytest.raises(RivetError) as also:
            await b2.send(conv, "from the other connection")
        assert also.value.code == ErrorCode.RATE_LIMITED
        await a.send(conv, "alice is fine")
        # Other requests are not counted against the send rate.
        assert isinstance(await b.request(rq.Ping(rid=0)), replies.Pong)

        await trio.sleep(retry_after + 0.05)
        ack = await b.request(b.state.unacked["limited"])
        assert not ack.duplicate
        page: replies.History = await b.request(rq.MsgHistory(rid=0, conv=conv))
        assert [m.content.text for m in page.messages if m.content] == [
            "burst 0",
            "burst 1",
            "burst 2",
            "alice is fine",
            "one too many",
        ]


async def test_a2_login_with_wrong_codes(rig: Rig) -> None:
    phone = "+13330000999"
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        never_sent = rq.LoginVerify(rid=0, phone=phone, code="123456")
        assert (await refused(conn, never_sent)).code == ErrorCode.CODE_INVALID
    await RivetClient.request_code(rig.url, phone=phone)
    code = rig.notifier.last_code(phone)
    assert code is not None
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        attempt = rq.LoginVerify(rid=0, phone=phone, code=wrong)
        codes = [(await refused(conn, attempt)).code for _ in range(5)]
        assert codes == [ErrorCode.CODE_INVALID] * 4 + [ErrorCode.CODE_ATTEMPTS_EXCEEDED]
        # Once exhausted, even the right code is refused: a new code must be requested.
        right = rq.LoginVerify(rid=0, phone=phone, code=code)
        assert (await refused(conn, right)).code == ErrorCode.CODE_ATTEMPTS_EXCEEDED
    # Asking again at once is throttled (C2); later a new code works.
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        throttled = await refused(conn, rq.LoginRequestCode(rid=0, phone=phone))
        assert throttled.code == ErrorCode.RATE_LIMITED
        assert throttled.retry_after is not None and 0 < throttled.retry_after <= 30
    rig.clock.advance(31)
    state = await rig.login(phone, "finally")
    assert state.user_id is not None


async def test_a2_sdk_refusals_outside_a_connection_raise_rivet_error(rig: Rig) -> None:
    """The SDK's ``login``, ``request_code`` and ``connect`` report a refusal as a
    ``RivetError`` with its code (what a client acts on), like ``request`` does."""
    phone, bob = await rig.new_user("bob")
    with pytest.raises(RivetError) as throttled:
        await RivetClient.request_code(rig.url, phone=phone)
    assert throttled.value.code == ErrorCode.RATE_LIMITED
    rig.clock.advance(31)
    await RivetClient.request_code(rig.url, phone=phone)
    code = rig.notifier.last_code(phone)
    assert code is not None
    with pytest.raises(RivetError) as wrong:
        await RivetClient.login(rig.url, phone=phone, code=f"{(int(code) + 1) % 1_000_000:06d}")
    assert wrong.value.code == ErrorCode.CODE_INVALID
    async with RivetClient.connect(rig.url, bob) as b:
        await b.request(rq.LogoutAll(rid=0))
    with pytest.raises(RivetError) as revoked:
        async with RivetClient.connect(rig.url, bob):
            pass
    assert revoked.value.code == ErrorCode.SESSION_REVOKED


async def test_a2_reusing_a_rotated_refresh_token_ends_the_session(rig: Rig) -> None:
    """A rotated-away refresh secret presented again is a theft indicator
    (``server.auth.errors.RefreshReused``): the session is deleted, so whoever holds the
    newest refresh token of that session must log in again too."""
    _, bob = await rig.new_user("bob")
    stolen = bob.refresh_token
    assert stolen is not None
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        rotated: replies.Tokens = await conn.request(rq.TokenRefresh(rid=0, refresh_token=stolen))
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        reuse = await refused(conn, rq.TokenRefresh(rid=0, refresh_token=stolen))
        assert reuse.code == ErrorCode.AUTH_FAILED
    async with RivetConnection.open(rig.url) as conn:
        await conn.request(hello())
        after = await refused(conn, rq.TokenRefresh(rid=0, refresh_token=rotated.refresh_token))
        assert after.code == ErrorCode.AUTH_FAILED


@pytest.mark.parametrize("revoke", ["logout_all", "suspend"])
async def test_a2_c1_a_session_revoked_while_a_device_authenticates_does_not_stay_open(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, revoke: str
) -> None:
    """The race: a connection read the user (token generation, suspension) for its
    ``hello``; before it was attached to the hub, another device's ``logout_all`` (or a
    suspension) committed and disconnected the user's attached connections, not this one.
    Before, it stayed open, authenticated with a revoked token, for good. Now the gateway
    reads the user again once the connection is attached, and closes it (4004, 4005)."""
    bob_phone, bob = await rig.new_user("bob")
    tablet = await rig.new_device(bob_phone, "tablet")
    credentials = rig.server.ctx.credentials
    authenticate = credentials.authenticate
    read, go_on = trio.Event(), trio.Event()

    async def held(stores, token):  # type: ignore[no-untyped-def]
        found = await authenticate(stores, token)
        if not read.is_set():  # the tablet's hello: held between its read and the attach
            read.set()
            await go_on.wait()
        return found

    monkeypatch.setattr(credentials, "authenticate", held)
    async with trio.open_nursery() as nursery:
        connected: list[RivetClient] = []

        async def tablet_connects() -> None:
            async with RivetClient.connect(rig.url, tablet) as t:
                connected.append(t)
                assert await closed_with(t.conn) == (
                    CloseCode.SESSION_REVOKED
                    if revoke == "logout_all"
                    else CloseCode.ACCOUNT_SUSPENDED
                )

        nursery.start_soon(tablet_connects)
        with trio.fail_after(5):
            await read.wait()
        if revoke == "logout_all":
            async with RivetClient.connect(rig.url, bob) as b:
                await b.request(rq.LogoutAll(rid=0))
                assert await closed_with(b.conn) == CloseCode.SESSION_REVOKED
        else:
            await rig.server.ctx.stores.personal.set_suspended(uid(bob), True)
        go_on.set()
