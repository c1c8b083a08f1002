"""A3: encryption at rest applied to the stores (``docs/encryption.md``).

``seal_stores`` wraps the stores that keep content so that every body is sealed
(``storage.crypto``) on its way in and opened on its way out; the rest of the server sees
plaintext records, as before, and never a sealed byte:

* a message body in the cross-domain store is sealed with its **sender's** data key
  (``user:<id>``), so destroying the account's keys erases what it wrote everywhere (A1);
* an organisation's copy is sealed with the **organisation's** key (``org:<id>``), so
  dissolving it (O4) erases every copy;
* a report's or a moderation act's evidence is sealed with the key of the user who wrote it;
* a DING's text is sealed with its **sender's** key (cross-domain DINGs; an organisation's
  own DINGs can be given the organisation's key with ``ding_organisation_key``).

A body whose key was destroyed, or that does not verify, reads as **erased**: an entry comes
back as recalled, a copy as recalled, evidence as None, a DING's text as "". A wrapped key
that does not open with the master key is never taken for erasure: it raises
``WrongMasterKey``.

Every wrapper overrides each method that takes or returns a record with a body, and passes
any other through (``tests/storage/test_sealing.py`` fails when an interface gains a method
with a body that is not overridden here).

``DataKeys`` is the key manager: it unwraps an owner's keys on first use and keeps them in a
bounded LRU cache, reserves uses in leases (one key-store write per ``LEASE`` seals), rotates
an owner's key when it reaches ``KEY_USE_LIMIT`` or on demand, and evicts an owner's keys
from the cache when they are destroyed. It is also the ``KeyStore`` the sealed ``Stores``
expose, so whoever destroys keys through ``stores.keys`` evicts them too.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import trio
from msgspec.structs import replace

from storage.crypto import KEY_USE_LIMIT, DataKey, KeyRing, MasterKey, WrongMasterKey, parse
from storage.crypto import associated_data as ad
from storage.ding import DingStore
from storage.ding_records import (
    Ding,
    DingCreated,
    HandOver,
    NewDing,
    NewStep,
    OutboxItem,
    PendingDingEffect,
    StepChange,
    StepCharge,
)
from storage.errors import AlreadyExists
from storage.interfaces import CrossDomainStore
from storage.keys import (
    KeysDestroyed,
    KeyStore,
    OwnerKeys,
    OwnerKind,
    WrappedKey,
    org_owner,
    user_owner,
)
from storage.moderation import (
    ActRecord,
    ModerationStore,
    NewAct,
    NewReport,
    ReportRecord,
    ReportStatus,
)
from storage.orgs import NewCopy, OrganisationStore, OrgCopy
from storage.records import (
    Appended,
    Entry,
    IdempotencyKey,
    NewEntry,
    PendingEffect,
    ReadMoved,
    Recall,
    Summary,
)
from storage.stores import Stores

log = logging.getLogger(__name__)

#: Uses reserved in the key store at a time (one write per this many seals of one owner;
#: a lease lost in a crash or a cache eviction counts as used).
LEASE: Final = 4096
#: Owners whose unwrapped keys are kept in memory at once (least recently used go first).
CACHE_OWNERS: Final = 4096


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class DataKeys:
    """Every owner's data keys: a ``KeyStore`` (passing through to the stored one, keeping
    the cache right) that also seals and opens."""

    def __init__(
        self,
        store: KeyStore,
        master: MasterKey,
        *,
        use_limit: int = KEY_USE_LIMIT,
        lease: int = LEASE,
        capacity: int = CACHE_OWNERS,
        now: Callable[[], int] = _wall_ms,
    ) -> None:
        if not 0 < use_limit <= KEY_USE_LIMIT:
            raise ValueError(f"use_limit must be 1 to {KEY_USE_LIMIT}")
        if lease < 1 or capacity < 1:
            raise ValueError("lease and capacity must be positive")
        self._store = store
        self._master = master
        self._use_limit = use_limit
        self._lease = lease
        self._capacity = capacity
        self._now = now
        self._rings: OrderedDict[str, KeyRing] = OrderedDict()
        self._locks: dict[str, trio.Lock] = {}
        self._fingerprint_key = master.derive("idempotency fingerprint")
        self.seals = 0
        self.opens = 0
        self.erased = 0
        self.unverified = 0
        self.rotations = 0

    @property
    def master_id(self) -> str:
        return self._master.key_id

    @property
    def use_limit(self) -> int:
        return self._use_limit

    # --- sealing ----------------------------------------------------------------------------

    async def seal(self, owner: str, plaintext: bytes, associated: bytes) -> bytes:
        """``plaintext`` sealed with the owner's active key (created on first use, rotated
        at the use limit). ``KeysDestroyed`` if the owner's keys were destroyed."""
        ring = self._rings.get(owner)
        if ring is None or not ring.can_seal():
            ring = await self._sealing_ring(owner)
        else:
            self._rings.move_to_end(owner)
        self.seals += 1
        return ring.seal(plaintext, associated)

    async def open(self, owner: str, body: bytes, associated: bytes) -> bytes | None:
        """The plaintext, or None when the body is erased: its key was destroyed, or it
        does not verify (tampered with, or moved to where it does not belong)."""
        self.opens += 1
        sealed = parse(body)
        if sealed is None:
            self.unverified += 1
            log.warning("a stored body is not a sealed envelope; shown as erased")
            return None
        ring = self._rings.get(owner)
        if ring is None or (not ring.destroyed and sealed.key_id > ring.newest_id):
            # Not cached, or sealed with a key newer than ours (rotated by another process).
            ring = await self._reload(owner)
        else:
            self._rings.move_to_end(owner)
        if sealed.key_id not in ring.keys:
            self.erased += 1
            return None
        plaintext = ring.open(sealed, associated)
        if plaintext is None:
            self.unverified += 1
            log.warning(
                "a sealed body does not verify (tampered with or moved); shown as erased",
                extra={"owner": owner, "key_id": sealed.key_id},
            )
        return plaintext

    def fingerprint(self, fingerprint: bytes) -> bytes:
        """An idempotency fingerprint keyed by the master key: the stored fingerprint is a
        hash of the content, which a plain hash would let anyone holding the database
        confirm guesses of."""
        return hmac.digest(self._fingerprint_key, fingerprint, "sha256")[:16]

    async def rotate(self, owner: str) -> int:
        """Make a new active key for the owner (old ones keep opening what they sealed);
        returns its id. ``KeysDestroyed`` if the owner's keys were destroyed."""
        async with self._locked(owner):
            ring = await self._reload(owner)
            if ring.destroyed:
                raise KeysDestroyed(owner)
            while True:
                try:
                    return await self._add_next(ring)
                except AlreadyExists:
                    ring = await self._reload(owner)

    def forget(self, owner: str) -> None:
        """Drop the owner's unwrapped keys from memory (they are loaded again when needed)."""
        self._rings.pop(owner, None)

    async def check_master(self) -> None:
        """``WrongMasterKey`` unless every stored key is wrapped by this master key."""
        foreign = {m: n for m, n in (await self._store.master_ids()).items() if m != self.master_id}
        if foreign:
            found = ", ".join(f"{n} by {m}" for m, n in sorted(foreign.items()))
            raise WrongMasterKey(
                f"data keys in this data directory are wrapped by another master key ({found}); "
                f"the configured one is {self.master_id}. Configure the right master key, or "
                "finish a master-key change with `rivet keys rewrap`."
            )

    def statistics(self) -> dict[str, int]:
        return {
            "owners_cached": len(self._rings),
            "seals": self.seals,
            "opens": self.opens,
            "erased": self.erased,
            "unverified": self.unverified,
            "rotations": self.rotations,
        }

    async def _sealing_ring(self, owner: str) -> KeyRing:
        async with self._locked(owner):
            for _ in range(8):
                ring = self._rings.get(owner) or await self._reload(owner)
                if ring.can_seal():
                    return ring
                if ring.destroyed:
                    raise KeysDestroyed(owner)
                active = ring.active
                if active is None:
                    await self._try_add_next(ring)
                    continue
                lease = await self._store.reserve(
                    owner, active.key_id, count=self._lease, limit=self._use_limit
                )
                if lease is not None:
                    active.extend(*lease)
                    continue
                fresh = await self._reload(owner)
                if fresh.newest_id == active.key_id:  # used up: rotate
                    await self._try_add_next(fresh)
            raise RuntimeError(f"no key to seal with for {owner} after repeated attempts")

    async def _try_add_next(self, ring: KeyRing) -> None:
        try:
            await self._add_next(ring)
        except AlreadyExists:  # another process added it first
            self.forget(ring.owner)

    async def _add_next(self, ring: KeyRing) -> int:
        key_id = ring.newest_id + 1
        secret = DataKey.generate_secret()
        reserved = min(self._lease, self._use_limit)
        await self._store.add_key(
            ring.owner,
            key_id=key_id,
            wrapped=self._master.wrap(ring.owner, key_id, secret),
            master_id=self._master.key_id,
            reserved=reserved,
            now=self._now(),
        )
        ring.add(DataKey(key_id, secret, uses=0, lease_end=reserved))
        if key_id > 1:
            self.rotations += 1
        self._remember(ring)
        return key_id

    async def _reload(self, owner: str) -> KeyRing:
        record = await self._store.load(owner)
        if record.destroyed_at is not None:
            ring = KeyRing(owner, destroyed=True)
        else:
            ring = KeyRing(
                owner,
                [
                    DataKey(k.key_id, self._master.unwrap(owner, k.key_id, k.wrapped))
                    for k in record.keys
                ],
            )
        self._remember(ring)
        return ring

    def _remember(self, ring: KeyRing) -> None:
        self._rings[ring.owner] = ring
        self._rings.move_to_end(ring.owner)
        while len(self._rings) > self._capacity:
            self._rings.popitem(last=False)

    def _locked(self, owner: str) -> _OwnerLock:
        return _OwnerLock(self._locks, owner)

    # --- KeyStore (what ``stores.keys`` is once sealed) -----------------------------------

    async def load(self, owner: str) -> OwnerKeys:
        return await self._store.load(owner)

    async def add_key(
        self, owner: str, *, key_id: int, wrapped: bytes, master_id: str, reserved: int, now: int
    ) -> WrappedKey:
        self.forget(owner)
        return await self._store.add_key(
            owner, key_id=key_id, wrapped=wrapped, master_id=master_id, reserved=reserved, now=now
        )

    async def reserve(
        self, owner: str, key_id: int, *, count: int, limit: int
    ) -> tuple[int, int] | None:
        return await self._store.reserve(owner, key_id, count=count, limit=limit)

    async def destroy(self, owner: str, *, now: int) -> int:
        """Destroy the owner's keys: everything sealed with them reads as erased from now
        on, in this process at once (its cached keys go too)."""
        async with self._locked(owner):
            try:
                gone = await self._store.destroy(owner, now=now)
            except BaseException:
                self.forget(owner)  # whatever happened, the store says what is left
                raise
            self._remember(KeyRing(owner, destroyed=True))
            return gone

    async def scan(self, kind: OwnerKind, *, after: str, limit: int) -> list[OwnerKeys]:
        return await self._store.scan(kind, after=after, limit=limit)

    async def rewrap(
        self, owner: str, key_id: int, *, expect_master: str, wrapped: bytes, master_id: str
    ) -> bool:
        self.forget(owner)
        return await self._store.rewrap(
            owner, key_id, expect_master=expect_master, wrapped=wrapped, master_id=master_id
        )

    async def master_ids(self) -> dict[str, int]:
        return await self._store.master_ids()


class _OwnerLock:
    """One trio lock per owner while anyone holds or waits for it."""

    def __init__(self, locks: dict[str, trio.Lock], owner: str) -> None:
        self._locks = locks
        self._owner = owner
        self._lock = locks.setdefault(owner, trio.Lock())

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()
        if (
            self._lock.statistics().tasks_waiting == 0
            and self._locks.get(self._owner) is self._lock
        ):
            del self._locks[self._owner]


# --- associated data: where each kind of body lives -------------------------------------------


def message_ad(conv_id: str, sender: int, ts: int, cmid: str | None) -> bytes:
    return ad("cross-message", conv_id, sender, ts, cmid)


def copy_ad(org_id: int, member: int, conv_ref: str, ts: int) -> bytes:
    return ad("org-copy", org_id, member, conv_ref, ts)


def report_ad(report: NewReport | ReportRecord) -> bytes:
    return ad(
        "report-evidence",
        report.reporter,
        report.target_user,
        report.conv_id,
        report.seq,
        report.created_at,
    )


def act_ad(act: NewAct | ActRecord) -> bytes:
    return ad("act-evidence", act.action, act.target_user, act.conv_id, act.seq, act.created_at)


class _PassThrough:
    """Methods not overridden go to the wrapped store unchanged (cached on first use)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self.__dict__["_inner"], name)
        setattr(self, name, value)
        return value


def sender_key_owner(conv_id: str, sender: int) -> str:
    """Cross-domain messages are sealed with their sender's key (A1: deleting the account
    destroys it)."""
    return user_owner(sender)


def organisation_key_owner(conv_id: str, sender: int) -> str:
    """Organisation-internal messages (ids ``o:<org>:...``) are sealed with the
    organisation's key (O4: dissolution destroys it)."""
    prefix, org, _rest = conv_id.split(":", 2)
    if prefix != "o":
        raise ValueError(f"not an organisation conversation: {conv_id!r}")
    return org_owner(int(org))


class SealedCrossDomainStore(_PassThrough):
    """Message bodies sealed with the key of ``owner_of(conv_id, sender)``: the sender's
    for cross-domain conversations, the organisation's for its own ones. System entries stay
    plain (they hold ids and group titles, which the conversation row holds in plain
    anyway)."""

    def __init__(
        self,
        inner: CrossDomainStore,
        keys: DataKeys,
        owner_of: Callable[[str, int], str] = sender_key_owner,
    ) -> None:
        self._inner = inner
        self._keys = keys
        self._owner_of = owner_of

    async def _open(self, entry: Entry) -> Entry:
        if entry.kind != "message" or entry.body is None:
            return entry
        plaintext = await self._keys.open(
            self._owner_of(entry.conv_id, entry.sender),
            entry.body,
            message_ad(entry.conv_id, entry.sender, entry.ts, entry.cmid),
        )
        if plaintext is None:
            return replace(entry, body=None, recalled=True)
        return replace(entry, body=plaintext)

    async def _open_all(self, entries: Sequence[Entry]) -> list[Entry]:
        return [await self._open(entry) for entry in entries]

    async def append(self, entry: NewEntry) -> Appended:
        # The sealed body and the keyed fingerprint go into one copy of the entry (each
        # ``replace`` copies every field; this runs once per message sent).
        changes: dict[str, Any] = {}
        if entry.kind == "message":
            changes["body"] = await self._keys.seal(
                self._owner_of(entry.conv_id, entry.sender),
                entry.body,
                message_ad(entry.conv_id, entry.sender, entry.ts, entry.cmid),
            )
        if entry.idempotency is not None:
            keyed = self._keys.fingerprint(entry.idempotency.fingerprint)
            changes["idempotency"] = replace(entry.idempotency, fingerprint=keyed)
        appended = await self._inner.append(replace(entry, **changes) if changes else entry)
        if appended.duplicate:
            return replace(appended, entry=await self._open(appended.entry))
        return replace(appended, entry=replace(appended.entry, body=entry.body))

    async def recorded(self, key: IdempotencyKey) -> Appended | None:
        keyed = replace(key, fingerprint=self._keys.fingerprint(key.fingerprint))
        found = await self._inner.recorded(keyed)
        return None if found is None else replace(found, entry=await self._open(found.entry))

    async def pending_effects(self, *, after: int, limit: int) -> list[PendingEffect]:
        return [
            replace(effect, entry=await self._open(effect.entry))
            for effect in await self._inner.pending_effects(after=after, limit=limit)
        ]

    async def recall(self, *, conv_id: str, seq: int, by: int, now: int) -> Recall:
        # The recall entry has no body; the recalled one's body is erased by the store.
        return await self._inner.recall(conv_id=conv_id, seq=seq, by=by, now=now)

    async def mark_read(self, *, conv_id: str, user_id: int, seq: int, now: int) -> ReadMoved:
        # A read entry has no body.
        return await self._inner.mark_read(conv_id=conv_id, user_id=user_id, seq=seq, now=now)

    async def erase_sender(self, user_id: int, *, now: int, limit: int) -> list[Entry]:
        # A1: the recall entries it returns have no body; the erased bodies are gone.
        return await self._inner.erase_sender(user_id, now=now, limit=limit)

    async def get_entry(self, conv_id: str, seq: int) -> Entry | None:
        entry = await self._inner.get_entry(conv_id, seq)
        return None if entry is None else await self._open(entry)

    async def history(
        self,
        conv_id: str,
        *,
        visible_from: int,
        visible_to: int | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Entry]:
        return await self._open_all(
            await self._inner.history(
                conv_id,
                visible_from=visible_from,
                visible_to=visible_to,
                before_seq=before_seq,
                limit=limit,
            )
        )

    async def entries_for(self, user_id: int, *, after: int, limit: int) -> list[Entry]:
        return await self._open_all(
            await self._inner.entries_for(user_id, after=after, limit=limit)
        )

    async def summaries(self, user_id: int, *, changed_after: int) -> list[Summary]:
        out = []
        for item in await self._inner.summaries(user_id, changed_after=changed_after):
            if item.last_message is not None:
                item = replace(item, last_message=await self._open(item.last_message))
            out.append(item)
        return out


class SealedOrganisationStore(_PassThrough):
    """Copy bodies sealed with the organisation's key."""

    def __init__(self, inner: OrganisationStore, keys: DataKeys) -> None:
        self._inner = inner
        self._keys = keys

    async def _open(self, copy: OrgCopy) -> OrgCopy:
        if copy.body is None:
            return copy
        plaintext = await self._keys.open(
            org_owner(copy.org_id),
            copy.body,
            copy_ad(copy.org_id, copy.member, copy.conv_ref, copy.ts),
        )
        if plaintext is None:
            return replace(copy, body=None, recalled=True)
        return replace(copy, body=plaintext)

    async def add_copy(self, org_id: int, copy: NewCopy) -> tuple[OrgCopy, bool]:
        body = await self._keys.seal(
            org_owner(org_id), copy.body, copy_ad(org_id, copy.member, copy.conv_ref, copy.ts)
        )
        stored, duplicate = await self._inner.add_copy(org_id, replace(copy, body=body))
        if duplicate:
            return await self._open(stored), True
        return replace(stored, body=copy.body), False

    async def copies(
        self,
        org_id: int,
        *,
        member: int | None = None,
        conv_ref: str | None = None,
        from_ts: int | None = None,
        to_ts: int | None = None,
        after_copy: int = 0,
        limit: int,
        include_hidden: bool = False,
    ) -> list[OrgCopy]:
        found = await self._inner.copies(
            org_id,
            member=member,
            conv_ref=conv_ref,
            from_ts=from_ts,
            to_ts=to_ts,
            after_copy=after_copy,
            limit=limit,
            include_hidden=include_hidden,
        )
        return [await self._open(copy) for copy in found]

    async def get_copy(self, org_id: int, copy_id: int) -> OrgCopy | None:
        copy = await self._inner.get_copy(org_id, copy_id)
        return None if copy is None else await self._open(copy)

    async def set_copy_state(
        self, org_id: int, copy_id: int, *, hidden: bool | None = None, recalled: bool = False
    ) -> OrgCopy:
        return await self._open(
            await self._inner.set_copy_state(org_id, copy_id, hidden=hidden, recalled=recalled)
        )


class SealedModerationStore(_PassThrough):
    """Evidence sealed with the key of the user who wrote it (the reported sender)."""

    def __init__(self, inner: ModerationStore, keys: DataKeys) -> None:
        self._inner = inner
        self._keys = keys

    async def _open_report(self, record: ReportRecord) -> ReportRecord:
        if record.evidence is None:
            return record
        evidence = await self._keys.open(
            user_owner(record.target_user), record.evidence, report_ad(record)
        )
        return replace(record, evidence=evidence)

    async def _open_act(self, record: ActRecord) -> ActRecord:
        if record.evidence is None or record.target_user is None:
            return replace(record, evidence=None)
        evidence = await self._keys.open(
            user_owner(record.target_user), record.evidence, act_ad(record)
        )
        return replace(record, evidence=evidence)

    async def add_report(self, report: NewReport) -> tuple[ReportRecord, bool]:
        stored = report
        if report.evidence is not None:
            evidence = await self._keys.seal(
                user_owner(report.target_user), report.evidence, report_ad(report)
            )
            stored = replace(report, evidence=evidence)
        record, duplicate = await self._inner.add_report(stored)
        return await self._open_report(record), duplicate

    async def get_report(self, report_id: int) -> ReportRecord | None:
        record = await self._inner.get_report(report_id)
        return None if record is None else await self._open_report(record)

    async def list_reports(
        self, *, status: ReportStatus | None, after_id: int, limit: int
    ) -> list[ReportRecord]:
        found = await self._inner.list_reports(status=status, after_id=after_id, limit=limit)
        return [await self._open_report(record) for record in found]

    async def record_act(self, act: NewAct) -> ActRecord:
        stored = act
        if act.evidence is not None:
            if act.target_user is None:
                raise ValueError("evidence needs the user who wrote it (target_user)")
            evidence = await self._keys.seal(user_owner(act.target_user), act.evidence, act_ad(act))
            stored = replace(act, evidence=evidence)
        return await self._open_act(await self._inner.record_act(stored))

    async def acts(self, *, after_id: int, limit: int) -> list[ActRecord]:
        return [
            await self._open_act(a) for a in await self._inner.acts(after_id=after_id, limit=limit)
        ]


# --- DINGs (G1-G3) ----------------------------------------------------------------------------

#: Whose data key seals a DING's text, given the DING (as written or as read back).
DingKeyOwner = Callable[["NewDing | Ding"], str]


def ding_sender_key(ding: NewDing | Ding) -> str:
    """A cross-domain DING (D3) is sealed with its sender's key, as a message is: deleting
    the account (A1) erases every DING it sent."""
    return user_owner(ding.sender)


def ding_organisation_key(org_id: int) -> DingKeyOwner:
    """For a store of one organisation's internal DINGs (D2): the organisation's key, so that
    dissolving it (O4) erases them. A store of several organisations' DINGs passes its own
    ``DingKeyOwner`` reading the organisation from the DING (``ding_payer_organisation_key``)."""
    owner = org_owner(org_id)

    def organisation_key(ding: NewDing | Ding) -> str:
        return owner

    return organisation_key


def ding_payer_organisation_key(ding: NewDing | Ding) -> str:
    """The organisation DING store (every organisation's internal DINGs, D2): each DING is
    sealed with its organisation's key, the organisation read from its payer
    (``org:<org>/user:<member>``: an organisation-internal DING is always paid by its
    organisation), so dissolving the organisation (O4) erases its DINGs' texts."""
    account, _, _member = ding.payer.partition("/")
    kind, _, org = account.partition(":")
    if kind != "org" or not org.isdigit():
        raise ValueError(f"not an organisation's DING: payer {ding.payer!r}")
    return ding_organisation_key(int(org))(ding)


def ding_ad(owner: str, sender: int, cmid: str, created_at: int) -> bytes:
    """A DING's text is bound to its key owner and to its (sender, cmid), which name one
    DING in a store, and its creation time."""
    return ad("ding-text", owner, sender, cmid, created_at)


class SealedDingStore(_PassThrough):
    """DING texts sealed with the key of ``owner_of(ding)``: the sender's for cross-domain
    DINGs (``ding_sender_key``), an organisation's for its own (``ding_organisation_key``).
    A text whose key was destroyed, or that does not verify, or that was stored in plain,
    reads as "" (erased). Steps, recipients, the outbox's rows and the quota ledger hold no
    content and stay plain; the idempotency fingerprint of ``create`` is keyed, as for
    messages."""

    def __init__(
        self, inner: DingStore, keys: DataKeys, owner_of: DingKeyOwner = ding_sender_key
    ) -> None:
        self._inner = inner
        self._keys = keys
        self._owner_of = owner_of

    async def _open(self, ding: Ding, opened: dict[int, Ding] | None = None) -> Ding:
        """``ding`` with its text opened (``opened``: DINGs already opened in this call)."""
        if opened is not None and ding.ding_id in opened:
            return replace(ding, text=opened[ding.ding_id].text, sealed=None)
        if ding.sealed is None:
            if ding.text:
                log.warning(
                    "a stored DING text is not sealed; shown as erased",
                    extra={"ding_id": ding.ding_id},
                )
            text = ""
        else:
            owner = self._owner_of(ding)
            plaintext = await self._keys.open(
                owner, ding.sealed, ding_ad(owner, ding.sender, ding.cmid, ding.created_at)
            )
            text = "" if plaintext is None else plaintext.decode()
        result = replace(ding, text=text, sealed=None)
        if opened is not None:
            opened[ding.ding_id] = result
        return result

    async def _open_change(self, change: StepChange, opened: dict[int, Ding]) -> StepChange:
        return replace(change, ding=await self._open(change.ding, opened))

    async def _open_all(self, dings: Sequence[Ding]) -> list[Ding]:
        return [await self._open(ding) for ding in dings]

    async def _open_one(self, change: StepChange | None) -> StepChange | None:
        return None if change is None else await self._open_change(change, {})

    async def create(self, new: NewDing) -> DingCreated:
        owner = self._owner_of(new)
        sealed = await self._keys.seal(
            owner, new.text.encode(), ding_ad(owner, new.sender, new.cmid, new.created_at)
        )
        stored = replace(
            new, text="", sealed=sealed, fingerprint=self._keys.fingerprint(new.fingerprint)
        )
        created = await self._inner.create(stored)
        if created.duplicate:
            return replace(created, ding=await self._open(created.ding))
        return replace(created, ding=replace(created.ding, text=new.text, sealed=None))

    async def get(self, ding_id: int) -> Ding | None:
        ding = await self._inner.get(ding_id)
        return None if ding is None else await self._open(ding)

    async def list_sent(self, sender: int, *, before: int | None, limit: int) -> list[Ding]:
        return await self._open_all(await self._inner.list_sent(sender, before=before, limit=limit))

    async def list_received(self, user_id: int, *, before: int | None, limit: int) -> list[Ding]:
        return await self._open_all(
            await self._inner.list_received(user_id, before=before, limit=limit)
        )

    async def hand_over(
        self,
        step_ids: Sequence[int],
        *,
        now: int,
        charged: Mapping[int, StepCharge],
    ) -> HandOver:
        result = await self._inner.hand_over(step_ids, now=now, charged=charged)
        opened: dict[int, Ding] = {}
        changed = tuple(
            [(step, await self._open_change(change, opened)) for step, change in result.changed]
        )
        return replace(result, changed=changed)

    async def confirm(self, ding_id: int, user_id: int, *, now: int) -> StepChange | None:
        return await self._open_one(await self._inner.confirm(ding_id, user_id, now=now))

    async def mark_read(self, ding_id: int, user_id: int, *, now: int) -> StepChange | None:
        return await self._open_one(await self._inner.mark_read(ding_id, user_id, now=now))

    async def mark_delivered(
        self, ding_id: int, user_ids: Sequence[int], *, now: int
    ) -> list[StepChange]:
        opened: dict[int, Ding] = {}
        return [
            await self._open_change(change, opened)
            for change in await self._inner.mark_delivered(ding_id, user_ids, now=now)
        ]

    async def cancel(self, ding_id: int, *, now: int) -> Ding | None:
        ding = await self._inner.cancel(ding_id, now=now)
        return None if ding is None else await self._open(ding)

    async def redding(
        self, ding_id: int, *, expect_round: int, now: int, steps: Sequence[NewStep]
    ) -> Ding | None:
        ding = await self._inner.redding(ding_id, expect_round=expect_round, now=now, steps=steps)
        return None if ding is None else await self._open(ding)

    async def claim_outbox(self, *, now: int, limit: int) -> list[OutboxItem]:
        # An outbox row carries its DING's text as stored; the DING has what opens it.
        items = await self._inner.claim_outbox(now=now, limit=limit)
        texts: dict[int, str] = {}
        for ding_id in dict.fromkeys(item.ding_id for item in items):
            ding = await self._inner.get(ding_id)
            texts[ding_id] = "" if ding is None else (await self._open(ding)).text
        return [replace(item, text=texts[item.ding_id]) for item in items]

    async def pending_effects(self, *, after: int, limit: int) -> list[PendingDingEffect]:
        # D4: the outbox relay copies the opened text (an erased one reads "": not copied).
        opened: dict[int, Ding] = {}
        return [
            effect
            if effect.ding is None
            else replace(effect, ding=await self._open(effect.ding, opened))
            for effect in await self._inner.pending_effects(after=after, limit=limit)
        ]

    async def outbox_sent(self, step_id: int, *, now: int) -> StepChange | None:
        return await self._open_one(await self._inner.outbox_sent(step_id, now=now))

    async def outbox_retry(
        self, step_id: int, *, next_attempt_at: int, now: int
    ) -> StepChange | None:
        return await self._open_one(
            await self._inner.outbox_retry(step_id, next_attempt_at=next_attempt_at, now=now)
        )

    async def outbox_failed(
        self, step_id: int, *, now: int, refund: bool = False
    ) -> StepChange | None:
        return await self._open_one(
            await self._inner.outbox_failed(step_id, now=now, refund=refund)
        )


def seal_stores(stores: Stores, master: MasterKey, **options: Any) -> Stores:
    """The same stores, with content sealed at rest under ``master``'s data keys.
    ``options`` go to ``DataKeys`` (tests use a tiny ``use_limit``)."""
    if isinstance(stores.keys, DataKeys):
        raise ValueError("these stores are sealed already")
    keys = DataKeys(stores.keys, master, **options)
    return dataclasses.replace(
        stores,
        cross=SealedCrossDomainStore(stores.cross, keys),
        org_conversations=SealedCrossDomainStore(
            stores.org_conversations, keys, organisation_key_owner
        ),
        orgs=SealedOrganisationStore(stores.orgs, keys),
        moderation=SealedModerationStore(stores.moderation, keys),
        ding=SealedDingStore(stores.ding, keys),
        org_ding=SealedDingStore(stores.org_ding, keys, ding_payer_organisation_key),
        keys=keys,
    )


def data_keys(stores: Stores) -> DataKeys:
    """The key manager of sealed stores (``ValueError`` for plain ones)."""
    if not isinstance(stores.keys, DataKeys):
        raise ValueError("these stores are not sealed")
    return stores.keys
