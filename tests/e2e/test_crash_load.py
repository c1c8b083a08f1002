"""Crashes under load (A3): six clients chat in single chats and groups while the server
(a real ``rivet serve`` on SQLite) is killed with SIGKILL at random moments, three times.
After each restart the clients reconnect, resend what was never acknowledged (same cmids)
and catch up by sync token. At the end we count, and every count must be zero:

* acknowledged-but-lost: an acknowledged message that is not stored at its acked seq;
* duplicates: a message stored twice, or delivered twice to a device;
* order violations: a conversation whose seqs have a gap or repeat, a sender whose
  messages are stored out of the order sent, or a device that got a conversation's
  messages out of seq order; and a message of another user that a device never got.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from client import ClientState, RivetClient, RivetError
from protocol import replies
from protocol import requests as rq
from protocol.events import MessageEvent, SyncEvent
from protocol.ids import direct_conversation_id
from tests.e2e.processes import create_users, rivet_server
from tests.e2e.test_crash import _history
from tests.e2e.waiting import wait_until

CLIENTS = 6
KILLS = 3
LOST = (RivetError, OSError, trio.BrokenResourceError)


@dataclass
class Device:
    index: int
    state: ClientState
    convs: list[str] = field(default_factory=list)
    sent: int = 0
    #: Every event catch-up returned, over all rounds, in the order returned.
    received: list[SyncEvent] = field(default_factory=list)


@dataclass
class Ledger:
    acked: dict[str, replies.Sent] = field(default_factory=dict)
    #: Messages resent after a crash because their ack never came.
    resent: int = 0

    def record(self, cmids: list[str], acks: list[replies.Sent]) -> None:
        self.resent += len(cmids)
        for cmid, ack in zip(cmids, acks, strict=True):
            self.acked[cmid] = ack


def _reached(ledger: Ledger, target: int) -> bool:
    return len(ledger.acked) >= target


async def _resend(client: RivetClient, device: Device, ledger: Ledger) -> None:
    in_flight = list(device.state.unacked)
    ledger.record(in_flight, await client.resend_unacked())


async def _chat(url: str, device: Device, ledger: Ledger) -> None:
    """One round of one device: resend, catch up, then send until the server dies."""
    try:
        async with RivetClient.connect(url, device.state) as client:
            await _resend(client, device, ledger)
            device.received += await client.catch_up()
            while True:
                n = device.sent
                device.sent += 1
                cmid = f"u{device.index}-{n}"
                conv = device.convs[n % len(device.convs)]
                ledger.acked[cmid] = await client.send(conv, cmid, cmid=cmid)
    except LOST:
        return
    except BaseExceptionGroup as group:  # the SDK's nursery reports the lost connection
        if group.subgroup(LOST) is None or group.subgroup(lambda e: not isinstance(e, LOST)):
            raise


async def test_a3_sigkill_under_load_loses_duplicates_and_reorders_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    states = create_users(data, CLIENTS)
    ids = [s.user_id or 0 for s in states]
    devices = [Device(i, s) for i, s in enumerate(states)]
    rng = random.Random(20260101)
    ledger = Ledger()

    async with rivet_server(data) as (_, url):
        groups: list[tuple[str, list[int]]] = []
        for owner, members in ((0, [1, 2, 3]), (3, [4, 5, 0])):
            async with RivetClient.connect(url, states[owner]) as c:
                created = await c.request(
                    rq.GroupCreate(
                        rid=0, cmid=f"g{owner}", title="load", members=[ids[m] for m in members]
                    )
                )
            groups.append((created.conv.conv, [owner, *members]))
        for low, high in ((0, 1), (2, 3), (4, 5)):
            conv = direct_conversation_id(ids[low], ids[high])
            devices[low].convs.append(conv)
            devices[high].convs.append(conv)
        for conv, members in groups:
            for m in members:
                devices[m].convs.append(conv)
        for device in devices:
            async with RivetClient.connect(url, device.state) as c:
                device.received += await c.catch_up()

    for _ in range(KILLS):
        async with rivet_server(data) as (process, url), trio.open_nursery() as nursery:
            for device in devices:
                nursery.start_soon(_chat, url, device, ledger)
            target = len(ledger.acked) + 40
            with trio.move_on_after(8):
                await wait_until(partial(_reached, ledger, target), step=0.01)
            await trio.sleep(rng.uniform(0.0, 0.5))
            process.kill()  # SIGKILL at a random moment of the load
        assert process.returncode is not None

    async with rivet_server(data) as (_, url):
        for device in devices:  # every device resends first...
            async with RivetClient.connect(url, device.state) as c:
                await _resend(c, device, ledger)
        for device in devices:  # ...then every device catches up
            async with RivetClient.connect(url, device.state) as c:
                device.received += await c.catch_up()
                assert not device.state.unacked
        reader = {conv: devices[members[0]] for conv, members in groups}
        for low in (0, 2, 4):
            reader[devices[low].convs[0]] = devices[low]
        stored: dict[str, dict[int, str | None]] = {}
        for conv, device in reader.items():
            async with RivetClient.connect(url, device.state) as c:
                stored[conv] = await _history(c, conv)

    lost, duplicates, order = _count(ledger, stored, devices)
    assert len(ledger.acked) >= KILLS * 40
    assert ledger.resent > 0, "no kill caught a message in flight"
    assert (lost, duplicates, order) == (0, 0, 0), (lost, duplicates, order)


def _count(
    ledger: Ledger, stored: dict[str, dict[int, str | None]], devices: list[Device]
) -> tuple[int, int, int]:
    lost = sum(1 for cmid, ack in ledger.acked.items() if stored[ack.conv].get(ack.seq) != cmid)
    duplicates = order = 0
    by_text: dict[str, tuple[str, int]] = {}
    for conv, entries in stored.items():
        if sorted(entries) != list(range(1, len(entries) + 1)):
            order += 1  # a gap or a repeat in the conversation's seqs
        for seq, text in entries.items():
            if text is None:
                continue
            if text in by_text:
                duplicates += 1
            by_text[text] = (conv, seq)
    stored_texts = {t for entries in stored.values() for t in entries.values() if t}
    lost += len(set(ledger.acked) - stored_texts)
    sent_by: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for text, (conv, seq) in by_text.items():
        sender, n = text[1:].split("-")
        sent_by[(conv, sender)].append((int(n), seq))
    for pairs in sent_by.values():
        seqs = [seq for _, seq in sorted(pairs)]
        order += sum(1 for a, b in itertools.pairwise(seqs) if b < a)
    for device in devices:
        got: dict[str, list[int]] = defaultdict(list)
        for event in device.received:
            if isinstance(event, MessageEvent) and event.content and event.content.text:
                got[event.conv].append(event.seq)
        for conv in device.convs:
            seqs = got[conv]
            duplicates += len(seqs) - len(set(seqs))
            order += sum(1 for a, b in itertools.pairwise(seqs) if b < a)
            others = {
                seq
                for seq, text in stored[conv].items()
                if text and not text.startswith(f"u{device.index}-")
            }
            lost += len(others - set(seqs))  # another user's message this device never got
    return lost, duplicates, order
