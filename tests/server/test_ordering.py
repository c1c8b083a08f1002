"""Live pushes leave in seq order per conversation, even when commits resume out of order."""

from __future__ import annotations

import trio
import trio.testing

from server.ordering import SeqOrderedPublisher


def make() -> tuple[SeqOrderedPublisher, list[bytes]]:
    out: list[bytes] = []
    return SeqOrderedPublisher(lambda users, frame: out.append(frame), max_hold=0.5), out


async def test_an_early_entry_waits_for_its_predecessor() -> None:
    publisher, out = make()
    publisher.publish("g:1", 5, [1], b"5")
    publisher.publish("g:1", 7, [1], b"7")
    publisher.publish("g:1", 6, [1], b"6")
    publisher.publish("g:1", 8, [1], b"8")
    assert out == [b"5", b"6", b"7", b"8"]


async def test_conversations_are_independent() -> None:
    publisher, out = make()
    publisher.publish("g:1", 1, [1], b"a1")
    publisher.publish("g:2", 1, [1], b"b1")
    publisher.publish("g:1", 3, [1], b"a3")
    publisher.publish("g:2", 2, [1], b"b2")
    assert out == [b"a1", b"b1", b"b2"]
    assert publisher.statistics()["held"] == 1


async def test_a_missing_predecessor_releases_the_rest_after_max_hold(
    autojump_clock: trio.testing.MockClock,
) -> None:
    publisher, out = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(publisher.run)
        publisher.publish("g:1", 1, [1], b"1")
        publisher.publish("g:1", 3, [1], b"3")
        publisher.publish("g:1", 4, [1], b"4")
        await trio.sleep(0.2)
        assert out == [b"1"]
        await trio.sleep(1)
        assert out == [b"1", b"3", b"4"]
        assert publisher.statistics() == {"tracked": 1, "held": 0, "released_early": 1}
        nursery.cancel_scope.cancel()


async def test_late_entries_are_never_held() -> None:
    publisher, out = make()
    publisher.publish("g:1", 4, [1], b"4")
    publisher.publish("g:1", 3, [1], b"3")
    assert out == [b"4", b"3"]
