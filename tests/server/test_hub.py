"""``server.hub`` keeps a user's lone connection without a set, and ``MemoryBus`` a user's
lone subscriber without a list (per idle connection memory): the same behaviour as with
one, two, and back to one."""

from __future__ import annotations

from server.bus import Deliver, Disconnect, MemoryBus
from server.hub import Hub


class _Conn:
    def __init__(self, user_id: int, device_id: int) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.presence_watch: frozenset[int] = frozenset()
        self.frames: list[bytes] = []
        self.closed: int | None = None

    def send_nowait(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close_soon(self, code: int, reason: str) -> None:
        self.closed = code


def test_one_then_two_then_one_connection_of_a_user() -> None:
    bus = MemoryBus()
    hub = Hub(bus)
    a, b = _Conn(7, 1), _Conn(7, 2)
    assert hub.attach(a)  # type: ignore[arg-type]
    assert not hub.attach(a)  # type: ignore[arg-type]  # again: still one
    assert hub.connection_count(7) == 1 and hub.online_devices(7) == {1}
    bus.publish([7], Deliver(b"one"))
    assert a.frames == [b"one"]

    assert not hub.attach(b)  # type: ignore[arg-type]
    assert hub.connection_count(7) == 2 and hub.connection_count() == 2
    assert hub.online_devices(7) == {1, 2}
    assert {c.device_id for c in hub.connections()} == {1, 2}
    bus.publish([7], Deliver(b"two"))
    assert a.frames == [b"one", b"two"] and b.frames == [b"two"]
    bus.publish([7], Disconnect(4000, "x", device_id=2))
    assert (a.closed, b.closed) == (None, 4000)

    assert not hub.detach(b)  # type: ignore[arg-type]
    assert not hub.detach(b)  # type: ignore[arg-type]  # not there any more
    assert hub.connection_count(7) == 1 and hub.is_online(7)
    bus.publish([7], Deliver(b"three"))
    assert a.frames == [b"one", b"two", b"three"] and b.frames == [b"two"]

    assert not hub.detach(_Conn(7, 3))  # type: ignore[arg-type]  # never attached
    assert hub.detach(a)  # type: ignore[arg-type]  # the last one
    assert not hub.is_online(7) and hub.connection_count() == 0
    assert bus.statistics()["subscribed_users"] == 0
    assert hub.online_devices(7) == set() and list(hub.connections()) == []


def test_bus_lone_subscriber_then_several() -> None:
    bus = MemoryBus()
    got: list[tuple[str, int]] = []

    def first(user_id: int, message: object) -> None:
        got.append(("first", user_id))

    def second(user_id: int, message: object) -> None:
        got.append(("second", user_id))

    bus.subscribe(1, first)
    bus.publish([1, 2], Deliver(b"x"))
    bus.subscribe(1, second)
    bus.publish([1], Deliver(b"x"))
    bus.unsubscribe(1, first)
    bus.publish([1], Deliver(b"x"))
    bus.unsubscribe(1, first)  # not subscribed any more: nothing happens
    bus.unsubscribe(1, second)
    bus.publish([1], Deliver(b"x"))
    assert got == [("first", 1), ("first", 1), ("second", 1), ("second", 1)]
    assert bus.statistics() == {"subscribed_users": 0, "published": 4, "delivered": 4}
