"""The Bus: publish to users, wherever their connections are.

Guarantee: **at most once**, in publish order per publisher, with no durability. Correctness
never depends on the bus: every durable event is in a store, and a client that missed a
live event catches up by sync token. That is why a message broker can replace the
in-process bus later without touching the router.

Topics are user ids: a publisher names the users an event is for (the router's policy
decides who), and each process's hub subscribes the users it has connections for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import msgspec


class Deliver(msgspec.Struct, frozen=True):
    """Write this already-encoded frame to every connection of the user."""

    frame: bytes


class Disconnect(msgspec.Struct, frozen=True):
    """Close the user's connections (all, or one device's) with a close code."""

    code: int
    reason: str
    device_id: int | None = None


BusMessage = Deliver | Disconnect
Subscriber = Callable[[int, BusMessage], None]


class Bus(Protocol):
    def publish(self, users: Iterable[int], message: BusMessage) -> None:
        """Hand ``message`` to the subscribers of each user, without blocking. The message is
        built once and shared: subscribers must not mutate it."""

    def subscribe(self, user_id: int, subscriber: Subscriber) -> None:
        """Start calling ``subscriber(user_id, message)`` for messages to ``user_id``. It runs
        in the publisher's context and must not block."""

    def unsubscribe(self, user_id: int, subscriber: Subscriber) -> None: ...

    def statistics(self) -> dict[str, int]: ...
