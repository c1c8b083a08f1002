"""The in-process Bus: a dict from user id to subscribers."""

from __future__ import annotations

from collections.abc import Iterable

from server.bus.interface import BusMessage, Subscriber


class MemoryBus:
    def __init__(self) -> None:
        self._subscribers: dict[int, list[Subscriber]] = {}
        self._published = 0
        self._delivered = 0

    def publish(self, users: Iterable[int], message: BusMessage) -> None:
        self._published += 1
        subscribers = self._subscribers
        for user_id in users:
            targets = subscribers.get(user_id)
            if targets:
                for subscriber in targets:
                    subscriber(user_id, message)
                    self._delivered += 1

    def subscribe(self, user_id: int, subscriber: Subscriber) -> None:
        self._subscribers.setdefault(user_id, []).append(subscriber)

    def unsubscribe(self, user_id: int, subscriber: Subscriber) -> None:
        targets = self._subscribers.get(user_id)
        if targets is None:
            return
        if subscriber in targets:
            targets.remove(subscriber)
        if not targets:
            del self._subscribers[user_id]

    def statistics(self) -> dict[str, int]:
        return {
            "subscribed_users": len(self._subscribers),
            "published": self._published,
            "delivered": self._delivered,
        }
