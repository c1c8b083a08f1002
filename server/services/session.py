"""The handshake and identity ops: hello, auth, login by one-time code, token refresh,
logout_all (A2), devices, profile, users.

Before ``hello`` nothing is accepted; before authentication only the ops in
``protocol.catalog.PRE_AUTH_OPS``. The connection's identity is set here and nowhere else.
"""

from __future__ import annotations

from protocol import replies
from protocol import requests as rq
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from protocol.version import PROTOCOL_VERSION
from server.auth import AuthFailed, RefreshReused, parse_refresh_token, raise_for_outcome
from server.bus import Disconnect
from server.connection import Connection
from server.context import Context
from storage.records import Device, User


def client_limits(ctx: Context) -> replies.ClientLimits:
    from protocol import limits

    config = ctx.config
    return replies.ClientLimits(
        max_frame_bytes=limits.MAX_FRAME_BYTES,
        max_text_chars=limits.MAX_TEXT_CHARS,
        max_users_per_request=limits.MAX_USERS_PER_REQUEST,
        max_page=limits.MAX_PAGE,
        group_member_limit=config.group_member_limit,
        send_rate_per_second=config.send_rate_per_second,
        send_burst=config.send_burst,
    )


def _session(ctx: Context, conn: Connection) -> replies.Session:
    assert conn.user_id is not None and conn.device_id is not None
    return replies.Session(
        user_id=conn.user_id,
        device_id=conn.device_id,
        server_time=ctx.clock.now_ms(),
        limits=client_limits(ctx),
    )


async def _bind(ctx: Context, conn: Connection, user: User, device: Device) -> None:
    """Authenticate the connection as ``device`` of ``user``."""
    _refuse_suspended(conn, user)
    conn.user_id = user.user_id
    conn.device_id = device.device_id
    conn.token_generation = user.token_generation
    ctx.last_seen.note(device.device_id, now=ctx.clock.now_ms())  # P6, written in batches


async def revoked_while_attaching(ctx: Context, conn: Connection) -> bool:
    """Whether the connection's session ended while it authenticated; if so it is closed
    (4004, or 4005 for a suspension). The gateway asks once the connection is attached to
    the hub.

    Why (A2, C1): ``logout_all``, a suspension, an account deletion or an enterprise
    account's freeze commits, then publishes a ``Disconnect`` to the user's connections
    attached at that moment. A connection that read the user before that commit and was
    attached after the publish would miss both: it would stay connected, authenticated
    with a revoked token. Each of them commits before it publishes, so this read, made
    after the attach, sees any change whose ``Disconnect`` the connection did not get."""
    assert conn.user_id is not None
    user = await ctx.stores.personal.get_user(conn.user_id)
    # Without flush: events published to the user since the attach must not reach a
    # session that was revoked (the close code says why).
    if user is None or user.deleted or user.token_generation != conn.token_generation:
        conn.close_soon(CloseCode.SESSION_REVOKED, "session revoked", flush=False)
        return True
    if user.suspended:
        conn.close_soon(CloseCode.ACCOUNT_SUSPENDED, "account suspended", flush=False)
        return True
    return False


def _refuse_suspended(conn: Connection, user: User) -> None:
    """C1: a suspended account is refused (2005) and the connection closed (4005)."""
    if user.suspended:
        conn.close_soon(CloseCode.ACCOUNT_SUSPENDED, "account suspended")
        raise ProtocolError(ErrorCode.FORBIDDEN, "account suspended")


async def hello(ctx: Context, conn: Connection, req: rq.Hello) -> replies.HelloResult:
    if conn.hello_done:
        raise ProtocolError(ErrorCode.ALREADY_HANDSHAKEN, "hello was already sent")
    if req.version != PROTOCOL_VERSION:
        conn.close_soon(CloseCode.UNSUPPORTED_VERSION, f"this server speaks {PROTOCOL_VERSION}")
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, "unsupported protocol version", path="$.version"
        )
    conn.hello_done = True
    session = None
    if req.token is not None:
        user, device = await ctx.credentials.authenticate(ctx.stores, req.token)
        await _bind(ctx, conn, user, device)
        session = _session(ctx, conn)
    return replies.HelloResult(
        protocol_version=PROTOCOL_VERSION,
        server_time=ctx.clock.now_ms(),
        limits=client_limits(ctx),
        session=session,
    )


async def auth(ctx: Context, conn: Connection, req: rq.Auth) -> replies.Session:
    if conn.authenticated:
        raise ProtocolError(ErrorCode.ALREADY_HANDSHAKEN)
    user, device = await ctx.credentials.authenticate(ctx.stores, req.token)
    await _bind(ctx, conn, user, device)
    return _session(ctx, conn)


async def request_code(
    ctx: Context, conn: Connection, req: rq.LoginRequestCode
) -> replies.CodeSent:
    """P1: send a one-time code to the phone through the Notifier. Only the code's keyed MAC
    is stored (A2); requests per phone are throttled (C2)."""
    ctx.credentials.code_throttle.acquire(req.phone)
    issued = ctx.credentials.codes.issue(phone=req.phone, now_ms=ctx.clock.now_ms())
    await ctx.stores.personal.put_login_code(
        phone=req.phone, mac=issued.mac, expires_at=issued.expires_at
    )
    await ctx.notifier.send_login_code(phone=req.phone, code=issued.code)
    return replies.CodeSent(expires_at=issued.expires_at)


async def verify_code(ctx: Context, conn: Connection, req: rq.LoginVerify) -> replies.Tokens:
    """Exchange a code for tokens: the user is created on first login (P1), a device is
    registered, and the connection is authenticated as it."""
    if conn.authenticated:
        raise ProtocolError(ErrorCode.ALREADY_HANDSHAKEN)
    outcome = await ctx.stores.personal.consume_login_code(
        phone=req.phone,
        mac=ctx.credentials.codes.mac(phone=req.phone, code=req.code),
        now=ctx.clock.now_ms(),
        max_attempts=ctx.credentials.codes.max_attempts,
    )
    raise_for_outcome(outcome)
    user = await ctx.credentials.create_user(
        ctx.stores, phone=req.phone, display_name=req.display_name or ""
    )
    _refuse_suspended(conn, user)  # before a device is registered or a token issued
    device = await ctx.stores.personal.register_device(
        user_id=user.user_id, name=req.device_name, now=ctx.clock.now_ms()
    )
    ctx.pushes.forget(user.user_id)
    tokens = await ctx.credentials.issue(ctx.stores, user, device)
    await _bind(ctx, conn, user, device)
    return ctx.credentials.tokens_reply(tokens, _session(ctx, conn))


async def refresh(ctx: Context, conn: Connection, req: rq.TokenRefresh) -> replies.Tokens:
    """Rotate a refresh token: the presented secret stops working (a reuse is refused)."""
    personal = ctx.stores.personal
    parsed = parse_refresh_token(req.refresh_token)
    stored = await personal.get_refresh_session(parsed.session_id)
    user = await personal.get_user(stored.user_id) if stored is not None else None
    now = ctx.clock.now_ms()
    try:
        session = ctx.credentials.refresh.check(
            parsed,
            stored if user is not None else None,
            now_ms=now,
            current_generation=user.token_generation if user is not None else 0,
        )
    except RefreshReused:
        # A2: a rotated-away secret came back, so someone holds a copy: end the session.
        await personal.delete_refresh_session(parsed.session_id)
        raise
    assert user is not None
    device = await personal.get_device(session.device_id)
    if device is None or device.user_id != user.user_id:
        raise AuthFailed("unknown device")
    if conn.authenticated and (conn.user_id, conn.device_id) != (user.user_id, device.device_id):
        raise ProtocolError(ErrorCode.FORBIDDEN, "this connection belongs to another device")
    # C1: refused before the secret rotates. Rotating first burnt the device's refresh token
    # (the new one never reached it), so it could not sign in again once unsuspended, though
    # a suspension keeps tokens (``PersonalStore.set_suspended``).
    _refuse_suspended(conn, user)
    text, renewed = ctx.credentials.refresh.renew(session, now_ms=now)
    rotated = await personal.rotate_refresh_session(
        session.session_id,
        old_mac=session.secret_mac,
        new_mac=renewed.secret_mac,
        expires_at=renewed.expires_at,
    )
    if not rotated:
        raise AuthFailed("refresh token already used")
    access = ctx.credentials.access.issue(
        user_id=user.user_id,
        device_id=device.device_id,
        generation=user.token_generation,
        now_ms=now,
    )
    if not conn.authenticated:
        await _bind(ctx, conn, user, device)
    return replies.Tokens(
        access_token=access,
        access_expires_at=now + ctx.credentials.access.ttl_ms,
        refresh_token=text,
        refresh_expires_at=renewed.expires_at,
        session=_session(ctx, conn),
    )


async def ping(ctx: Context, conn: Connection, req: rq.Ping) -> replies.Pong:
    return replies.Pong(server_time=ctx.clock.now_ms())


async def logout_all(ctx: Context, conn: Connection, req: rq.LogoutAll) -> replies.Done:
    """A2: revoke every session of the caller (tokens of older generations are refused) and
    close all their open connections with 4004. The reply goes out before this connection
    closes."""
    assert conn.user_id is not None
    await ctx.stores.personal.bump_token_generation(conn.user_id)
    ctx.bus.publish(
        [conn.user_id], Disconnect(code=CloseCode.SESSION_REVOKED, reason="logged out everywhere")
    )
    return replies.Done()


async def devices(ctx: Context, conn: Connection, req: rq.DevicesList) -> replies.Devices:
    assert conn.user_id is not None
    return replies.Devices(
        devices=[
            replies.DeviceInfo(
                device_id=d.device_id,
                name=d.name,
                created_at=d.created_at,
                last_seen_at=d.last_seen_at,
                current=d.device_id == conn.device_id,
            )
            for d in await ctx.stores.personal.list_devices(conn.user_id)
        ]
    )


async def set_profile(ctx: Context, conn: Connection, req: rq.ProfileSet) -> replies.Done:
    assert conn.user_id is not None
    await ctx.stores.personal.set_display_name(conn.user_id, req.display_name)
    return replies.Done()


async def users(ctx: Context, conn: Connection, req: rq.UsersGet) -> replies.Users:
    found = await ctx.stores.personal.get_users(sorted(set(req.user_ids)))
    return replies.Users(
        users=[replies.UserInfo(user_id=u.user_id, display_name=u.display_name) for u in found]
    )
