"""The in-process Bus: a dict from user id to subscribers."""

from __future__ import annotations

from collections.abc import Iterable

from server.bus.interface import BusMessage, Subscriber


class MemoryBus:
    def __init__(self) -> None:
        #: A user's subscriber, or their list when there are more: one per user is the
        #: usual case (each process's hub), and a list of one costs ~70 B per user.
        self._subscribers: dict[int, Subscriber | list[Subscriber]] = {}
        self._published = 0
        self._delivered = 0

    def publish(self, users: Iterable[int], message: BusMessage) -> None:
        self._published += 1
        subscribers = self._subscribers
        for user_id in users:
            targets = subscribers.get(user_id)
            if targets is None:
                continue
            if isinstance(targets, list):
                for subscriber in targets:
                    subscriber(user_id, message)
                    self._delivered += 1
            else:
                targets(user_id, message)
                self._delivered += 1

    def subscribe(self, user_id: int, subscriber: Subscriber) -> None:
        targets = self._subscribers.get(user_id)
        if targets is None:
            self._subscribers[user_id] = subscriber
        elif isinstance(targets, list):
            targets.append(subscriber)
        else:
            self._subscribers[user_id] = [targets, subscriber]

    def unsubscribe(self, user_id: int, subscriber: Subscriber) -> None:
        targets = self._subscribers.get(user_id)
        if targets is None:
            return
        if not isinstance(targets, list):
            if targets == subscriber:
                del self._subscribers[user_id]
            return
        if subscriber in targets:
            targets.remove(subscriber)
        if len(targets) == 1:
            self._subscribers[user_id] = targets[0]
        elif not targets:
            del self._subscribers[user_id]

    def statistics(self) -> dict[str, int]:
        return {
            "subscribed_users": len(self._subscribers),
            "published": self._published,
            "delivered": self._delivered,
        }
