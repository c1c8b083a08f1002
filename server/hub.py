"""The registry of this process's connections, and local fan-out.

The hub subscribes to the bus for each user with at least one local connection, and writes
each delivered frame (encoded once by the publisher) into the send queue of every one of
that user's connections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from server.bus import Bus, BusMessage, Deliver, Disconnect
from server.connection import Connection
from server.metrics import METRICS


class Hub:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        #: A user's connections here: most users have one, kept as it is (a set of one is
        #: ~0.25 KiB more per idle connection); a set once there are more.
        self._by_user: dict[int, Connection | set[Connection]] = {}
        #: One bound method for every subscription (one per ``subscribe`` would be made
        #: anew for each user).
        self._deliver = self._on_bus_message
        #: Connections showing a user's presence (explicit subscriptions, for groups).
        self._watchers: dict[int, set[Connection]] = {}
        #: Called with every connection that goes away (e.g. live streams drop it).
        self._on_detach: list[Callable[[Connection], None]] = []

    def on_detach(self, listener: Callable[[Connection], None]) -> None:
        """Call ``listener(connection)`` from ``detach``; it must not block or raise."""
        self._on_detach.append(listener)

    def attach(self, connection: Connection) -> bool:
        """Register an authenticated connection. True if it is the user's first here."""
        user_id = connection.user_id
        assert user_id is not None
        connections = self._by_user.get(user_id)
        if connections is None:
            self._by_user[user_id] = connection
            self._bus.subscribe(user_id, self._deliver)
            return True
        if isinstance(connections, set):
            connections.add(connection)
        elif connections is not connection:
            self._by_user[user_id] = {connections, connection}
        return False

    def detach(self, connection: Connection) -> bool:
        """Forget a connection. True if it was the user's last one here."""
        self.watch(connection, frozenset())
        for listener in self._on_detach:
            listener(connection)
        user_id = connection.user_id
        if user_id is None:
            return False
        connections = self._by_user.get(user_id)
        if connections is None:
            return False
        if isinstance(connections, set):
            if connection not in connections:
                return False
            connections.discard(connection)
            if connections:
                if len(connections) == 1:
                    (self._by_user[user_id],) = connections
                return False
        elif connections is not connection:
            return False
        del self._by_user[user_id]
        self._bus.unsubscribe(user_id, self._deliver)
        return True

    def _of(self, user_id: int) -> tuple[Connection, ...] | set[Connection]:
        """The user's connections here, to iterate (empty if none)."""
        connections = self._by_user.get(user_id)
        if connections is None:
            return ()
        if isinstance(connections, set):
            return connections
        return (connections,)

    def _on_bus_message(self, user_id: int, message: BusMessage) -> None:
        connections = self._of(user_id)
        if not connections:
            return
        if isinstance(message, Deliver):
            METRICS.deliveries.inc(len(connections))
            for connection in connections:
                connection.send_nowait(message.frame)
        elif isinstance(message, Disconnect):
            for connection in list(connections):
                if message.device_id is None or connection.device_id == message.device_id:
                    connection.close_soon(message.code, message.reason)

    def is_online(self, user_id: int) -> bool:
        return user_id in self._by_user

    def online_devices(self, user_id: int) -> set[int]:
        return {c.device_id for c in self._of(user_id) if c.device_id is not None}

    def connections(self) -> Iterator[Connection]:
        for user_id in list(self._by_user):
            yield from list(self._of(user_id))

    def connection_count(self, user_id: int | None = None) -> int:
        if user_id is not None:
            return len(self._of(user_id))
        return sum(len(c) if isinstance(c, set) else 1 for c in self._by_user.values())

    # presence subscriptions (ephemeral, local to this process)

    def watch(self, connection: Connection, users: frozenset[int]) -> None:
        """Replace the set of users whose presence ``connection`` is shown."""
        for user_id in connection.presence_watch - users:
            watchers = self._watchers.get(user_id)
            if watchers is not None:
                watchers.discard(connection)
                if not watchers:
                    del self._watchers[user_id]
        for user_id in users - connection.presence_watch:
            self._watchers.setdefault(user_id, set()).add(connection)
        connection.presence_watch = users

    def watchers_of(self, user_id: int) -> set[Connection]:
        return set(self._watchers.get(user_id, ()))

    def statistics(self) -> dict[str, int]:
        return {
            "users": len(self._by_user),
            "connections": self.connection_count(),
            "watched_users": len(self._watchers),
        }
