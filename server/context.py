"""What the router hands every service: the stores, the seams and the shared state."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from server.account_deletion import AccountEraser
from server.bus import Bus, Deliver
from server.clock import Clock
from server.config import Config
from server.credentials import Credentials
from server.ding.runtime import DingRuntime
from server.dissolution import Dissolver
from server.domains import conversation_store
from server.enterprise import EnterpriseIndex
from server.group_locks import GroupLocks
from server.hub import Hub
from server.last_seen import LastSeen
from server.live import LiveRuntime
from server.membership import MemberCache
from server.notify.interface import Notifier
from server.ordering import SeqOrderedPublisher
from server.org_feed import OrgFeeds
from server.org_index import OrgIndex
from server.outbox import OutboxRelay
from server.push import PushQueue
from server.ratelimit import KeyedLimiter
from server.receipts import ReceiptCoalescer
from storage.interfaces import CrossDomainStore
from storage.records import Entry
from storage.stores import Stores

_encoder = msgspec.msgpack.Encoder()


def publish_event(bus: Bus, users: Iterable[int], event: msgspec.Struct) -> None:
    """Encode ``event`` once and hand the same bytes to every recipient's connections."""
    bus.publish(users, Deliver(_encoder.encode(event)))


@dataclass(frozen=True, slots=True)
class Context:
    config: Config
    clock: Clock
    stores: Stores
    bus: Bus
    hub: Hub
    notifier: Notifier
    credentials: Credentials
    members: MemberCache
    send_limiter: KeyedLimiter
    receipts: ReceiptCoalescer
    #: P6: devices' last sign-in times, written in batches off the sign-in path.
    last_seen: LastSeen
    pushes: PushQueue
    ordered: SeqOrderedPublisher
    #: L1: active live streams, their counts and grace timers.
    live: LiveRuntime
    #: G1-G3: DING timers, the SMS/call outbox relay and their events.
    ding: DingRuntime
    #: D4: which organisations each user belongs to (for the copy effect of a message).
    org_index: OrgIndex
    #: D5: admins watching their organisation's real-time audit feed.
    org_feeds: OrgFeeds
    #: D4: carries out effects across stores (organisation copies) after they commit.
    outbox: OutboxRelay
    #: O4: the resumable job that deletes dissolved organisations' stores.
    dissolver: Dissolver
    #: A1: the resumable job that erases deleted personal accounts.
    eraser: AccountEraser
    #: P5/O1/O3: who is an enterprise account (cached for the send path), and the verifier.
    enterprise: EnterpriseIndex
    #: M1/M2: changes to one group run one at a time (``server/group_locks.py``).
    group_locks: GroupLocks = field(default_factory=GroupLocks)

    def conversations(self, conv_id: str) -> CrossDomainStore:
        """The store that keeps ``conv_id`` (D2/D3, ``server/domains.py``)."""
        return conversation_store(self.stores, conv_id)

    def publish(self, users: Iterable[int], event: msgspec.Struct) -> None:
        publish_event(self.bus, users, event)

    def publish_entry(self, entry: Entry, users: Iterable[int], event: msgspec.Struct) -> None:
        """Publish a conversation entry's event; sequenced entries go out in seq order."""
        if entry.kind in ("message", "system"):
            self.ordered.publish(entry.conv_id, entry.seq, users, _encoder.encode(event))
        else:
            publish_event(self.bus, users, event)


def bus_publisher(bus: Bus) -> Callable[[Iterable[int], bytes], None]:
    def publish(users: Iterable[int], frame: bytes) -> None:
        bus.publish(users, Deliver(frame))

    return publish
