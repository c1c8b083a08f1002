"""The set of stores a server runs on, one per data domain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storage.consent import ConsentStore
from storage.ding import DingStore
from storage.interfaces import CrossDomainStore, PersonalStore
from storage.keys import KeyStore
from storage.live import LiveStore
from storage.moderation import ModerationStore
from storage.orgs import OrganisationStore


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores of each data domain: personal (D1), cross-domain (D3) and organisations
    (D2), each in its own database; a write never spans two of them."""

    personal: PersonalStore
    cross: CrossDomainStore
    #: L1: records of live streams started in cross-domain groups (in the cross database).
    live: LiveStore
    #: D2: organisations, their members, copies and audit logs (organisations database).
    orgs: OrganisationStore
    #: D1/D4: consent records (in the personal database).
    consent: ConsentStore
    #: G1-G3: cross-domain DING messages, their steps and outbox, and personal users' monthly
    #: allowances (cross database).
    ding: DingStore
    #: C1: reports and the moderators' act log (platform data, its own database).
    moderation: ModerationStore
    #: A3: data keys, wrapped by the master key: users' in the personal database, organisations'
    #: in the organisations database (storage/keys.py, docs/encryption.md).
    keys: KeyStore
    #: D2: organisation-internal conversations (ids ``o:<org>:...``) of every organisation,
    #: rows keyed by organisation through the id; the same interface as ``cross`` with its
    #: own stream positions (its own database: organisation-conversations.db).
    #: Which of the two keeps a conversation is the router's decision
    #: (``server/domains.py``); stores decide nothing.
    org_conversations: CrossDomainStore
    #: D2/G2: DINGs inside one organisation (sender and every recipient its enterprise
    #: accounts, ids ``o<org>:<n>``) and every organisation's DING package, in the
    #: organisation conversations database; which store keeps a DING is the router's
    #: decision (``server.policy.ding_store_for``).
    org_ding: DingStore
    #: L1 with D2: records of live streams started in organisation-internal groups (in the
    #: organisation conversations database).
    org_live: LiveStore
    #: What keeps these stores from serving, as short sentences (none while healthy): an
    #: operator's health check (``/healthz``) answers 503 with them, so an orchestrator
    #: restarts the server instead of leaving it refusing every write.
    problems: Callable[[], list[str]] = lambda: []

    def conversation_stores(self) -> tuple[CrossDomainStore, CrossDomainStore]:
        """Both conversation stores, cross-domain first, for what spans a user's
        conversations (their streams, their memberships, erasure)."""
        return (self.cross, self.org_conversations)
