"""``RivetClient``: a connection plus the state that outlives it.

Typical use::

    state = await RivetClient.login(url, phone="+15550100", code="123456")
    async with RivetClient.connect(url, state) as client:
        backlog = await client.catch_up()          # missed events, de-duplicated
        ack = await client.send("s:1", "hello")    # returns after the server made it durable
        event = await client.next_event()          # live events, de-duplicated

After a disconnect, ``connect`` again with the same ``state``: it authenticates with the
stored token (refreshing it if expired), catches up from the stored sync token and resends
every message that was not acknowledged, with its original ``cmid``, so nothing is lost or
stored twice.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from client.connection import RivetConnection, RivetError
from client.state import ClientState
from protocol import replies
from protocol import requests as rq
from protocol.catalog import AnyEvent
from protocol.errors import ErrorCode
from protocol.events import (
    ContactEvent,
    MessageEvent,
    ReadEvent,
    RecallEvent,
    SettingsEvent,
    SyncEvent,
)
from protocol.version import PROTOCOL_VERSION

_DURABLE = (MessageEvent, RecallEvent, ReadEvent, ContactEvent, SettingsEvent)


class RivetClient:
    def __init__(self, conn: RivetConnection, state: ClientState) -> None:
        self.conn = conn
        self.state = state
        self.session: replies.Session | None = None

    # --- connecting -------------------------------------------------------------------------

    @staticmethod
    async def login(
        url: str,
        *,
        phone: str,
        code: str,
        device_name: str = "sdk",
        display_name: str | None = None,
    ) -> ClientState:
        """Exchange a one-time code for tokens (the code was requested with ``request_code``)."""
        async with RivetConnection.open(url) as conn:
            await conn.request(rq.Hello(rid=0, version=PROTOCOL_VERSION))
            tokens: replies.Tokens = await conn.request(
                rq.LoginVerify(
                    rid=0,
                    phone=phone,
                    code=code,
                    device_name=device_name,
                    display_name=display_name,
                )
            )
            await conn.aclose()
        return ClientState(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            user_id=tokens.session.user_id,
            device_id=tokens.session.device_id,
        )

    @staticmethod
    async def request_code(url: str, *, phone: str) -> replies.CodeSent:
        async with RivetConnection.open(url) as conn:
            await conn.request(rq.Hello(rid=0, version=PROTOCOL_VERSION))
            sent: replies.CodeSent = await conn.request(rq.LoginRequestCode(rid=0, phone=phone))
            await conn.aclose()
        return sent

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        state: ClientState,
        *,
        catch_up: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> AsyncIterator[RivetClient]:
        """Connect and authenticate with ``state``'s token (refreshing it when it expired).
        With ``catch_up``, also sync and resend before returning. ``ssl_context`` is for
        ``wss://`` URLs (None: the system's trusted CAs)."""
        async with RivetConnection.open(url, ssl_context=ssl_context) as conn:
            client = cls(conn, state)
            await client._authenticate()
            if catch_up:
                await client.catch_up()
            yield client

    async def _authenticate(self) -> None:
        hello: replies.HelloResult
        try:
            hello = await self.conn.request(
                rq.Hello(rid=0, version=PROTOCOL_VERSION, token=self.state.access_token)
            )
            session = hello.session
        except RivetError as error:
            if error.code != ErrorCode.TOKEN_EXPIRED or self.state.refresh_token is None:
                raise
            session = None
        if session is None:
            if self.state.refresh_token is None:
                raise RivetError(2000, "not_authenticated", "no token", retryable=False)
            tokens: replies.Tokens = await self.conn.request(
                rq.TokenRefresh(rid=0, refresh_token=self.state.refresh_token)
            )
            self.state.access_token = tokens.access_token
            self.state.refresh_token = tokens.refresh_token
            session = tokens.session
        self.session = session
        self.state.user_id = session.user_id
        self.state.device_id = session.device_id

    @property
    def user_id(self) -> int:
        assert self.state.user_id is not None
        return self.state.user_id

    # --- requests ------------------------------------------------------------------------------

    async def request(self, request: rq.Request) -> Any:
        return await self.conn.request(request)

    async def send(
        self, conv: str, text: str = "", *, cmid: str | None = None, **content: Any
    ) -> replies.Sent:
        """Send a message; returns the ack, which the server gives only once the message is
        durable. Until then it is kept in ``state.unacked`` and resent on reconnect."""
        request = rq.MsgSend(
            rid=0,
            conv=conv,
            cmid=cmid or uuid.uuid4().hex,
            content=rq.Content(text=text, **content),
        )
        self.state.unacked[request.cmid] = request
        sent: replies.Sent = await self.conn.request(request)
        self.state.unacked.pop(request.cmid, None)
        self.state.dedup.accept(_own_echo(sent, self.user_id))
        return sent

    async def resend_unacked(self) -> list[replies.Sent]:
        """Resend every unacknowledged message with its original cmid (stored at most once)."""
        acks = []
        for cmid, request in list(self.state.unacked.items()):
            sent: replies.Sent = await self.conn.request(request)
            self.state.unacked.pop(cmid, None)
            acks.append(sent)
        return acks

    async def catch_up(self, *, page: int = 500) -> list[SyncEvent]:
        """Sync from the stored token until current, resend what was unacknowledged, and
        acknowledge the new token. Returns the events not seen before, in stream order."""
        state = self.state
        accept = state.dedup.accept
        fresh: list[SyncEvent] = []
        while True:
            # Summaries only for a new device (the server sends them without a token
            # anyway): with a token they would only be computed, sent and dropped.
            token = state.sync_token
            result: replies.SyncPage = await self.conn.request(
                rq.Sync(rid=0, token=token, summary=token is None, limit=page)
            )
            if token is None:
                # A new device starts from the summary: what came before is history.
                for item in result.summaries:
                    state.dedup.start_at(item.conv, item.last_seq)
            fresh.extend([e for e in result.events if accept(e)])
            state.sync_token = result.token
            if not result.more:
                break
        await self.resend_unacked()
        if self.state.sync_token is not None:
            await self.conn.request(rq.Ack(rid=0, token=self.state.sync_token))
        return fresh

    # --- events ----------------------------------------------------------------------------------

    async def next_event(self) -> AnyEvent:
        """The next pushed event not seen before (wrap in ``trio.fail_after`` to bound it)."""
        while True:
            event = await self.conn.events.receive()
            if isinstance(event, _DURABLE) and not self.state.dedup.accept(event):
                continue
            return event

    async def next_message(self, *, conv: str | None = None) -> MessageEvent:
        """The next new ``ev.message`` (optionally of one conversation); others are skipped."""
        while True:
            event = await self.next_event()
            if isinstance(event, MessageEvent) and (conv is None or event.conv == conv):
                return event


def _own_echo(sent: replies.Sent, user_id: int) -> MessageEvent:
    """The event the server will push back for our own message, to mark it seen."""
    return MessageEvent(
        stream=sent.stream,
        conv=sent.conv,
        seq=sent.seq,
        msg_id=sent.msg_id,
        sender=user_id,
        ts=sent.ts,
    )
