"""The real-time audit feed: connections of admins watching their organisation.

Only what is already in the organisation's own store is fed: new copies (made by the outbox
relay under the consent rule) and audit entries. Watchers are per process.
"""

from __future__ import annotations

import msgspec

from server.connection import Connection

_encoder = msgspec.msgpack.Encoder()


class OrgFeeds:
    def __init__(self) -> None:
        self._watchers: dict[int, set[Connection]] = {}

    def watch(self, org_id: int, connection: Connection, *, on: bool) -> None:
        watchers = self._watchers.setdefault(org_id, set())
        if on:
            watchers.add(connection)
        else:
            watchers.discard(connection)
        if not watchers:
            del self._watchers[org_id]

    def drop_user(self, org_id: int, user_id: int) -> None:
        """D5: a user who is no longer an admin with the feed's permission stops getting it
        at once (their connections are unsubscribed, not closed)."""
        for connection in [c for c in self._watchers.get(org_id, ()) if c.user_id == user_id]:
            self.watch(org_id, connection, on=False)

    def forget(self, connection: Connection) -> None:
        for org_id in [o for o, w in self._watchers.items() if connection in w]:
            self.watch(org_id, connection, on=False)

    def publish(self, org_id: int, event: msgspec.Struct) -> None:
        watchers = self._watchers.get(org_id)
        if not watchers:
            return
        frame = _encoder.encode(event)
        for connection in list(watchers):
            connection.send_nowait(frame)

    def watching(self, org_id: int) -> int:
        return len(self._watchers.get(org_id, ()))
