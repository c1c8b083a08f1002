"""DING messages (G1-G3): urgent messages each recipient must confirm, escalating from in-app
to SMS to a phone call while unconfirmed. Requests, results and events of the feature, joined
to the protocol's unions in ``protocol.catalog``.

A DING id names the store that keeps the DING, so every op routes without a lookup: ``x:<n>``
is DING ``n`` of the cross-domain store (D3), ``o<org>:<n>`` DING ``n`` of organisation
``org``'s store (D2: sender and every recipient are that organisation's enterprise accounts).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from protocol import limits
from protocol.events import Event
from protocol.replies import Result
from protocol.requests import Request
from protocol.types import ClientMessageId, OrgId, PageLimit, Timestamp, UserId

#: ``x:<number>``: a DING kept in the cross-domain store; ``o<org>:<number>``: one kept in
#: organisation ``org``'s store.
DingId = Annotated[
    str,
    Meta(min_length=3, max_length=34, pattern=r"^(x|o[1-9][0-9]{0,15}):[1-9][0-9]{0,15}$"),
]
#: A position in the merged lists ``ding.sent`` / ``ding.received``: per store, the number
#: the list has come down to (exclusive): ``x:<n>`` (cross-domain), ``o:<n>`` (organisation
#: stores) or both, ``x:<n>,o:<m>``. A store it does not name is read from its newest.
DingCursor = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=37,
        pattern=r"^(x:[1-9][0-9]{0,15}(,o:[1-9][0-9]{0,15})?|o:[1-9][0-9]{0,15})$",
    ),
]
#: How a DING reaches a recipient: the in-app event, an SMS, a phone call.
DingChannel = Literal["in_app", "sms", "call"]
#: Where one step of a recipient's escalation stands (``docs/ding.md`` has the table).
DingStepState = Literal[
    "scheduled", "handed_over", "sent", "failed", "cancelled", "quota_exhausted"
]
DingState = Literal["scheduled", "sent", "cancelled"]
DingText = Annotated[str, Meta(min_length=1, max_length=limits.MAX_TEXT_CHARS)]
DelaySeconds = Annotated[int, Meta(ge=0, le=limits.MAX_DING_DELAY_SECONDS)]
Recipients = Annotated[list[UserId], Meta(min_length=1, max_length=limits.MAX_DING_RECIPIENTS)]
#: The channels an organisation's DING package pays for (in-app delivery is free).
PaidChannel = Literal["sms", "call"]
#: Units one top-up may add to an organisation's package.
TopupUnits = Annotated[int, Meta(ge=1, le=limits.MAX_DING_TOPUP_UNITS)]


def ding_id(number: int, org: int | None = None) -> str:
    """The id of DING ``number`` of the cross-domain store, or of organisation ``org``'s."""
    return f"x:{number}" if org is None else f"o{org}:{number}"


def parse_ding_id(ding: str) -> tuple[int | None, int]:
    """(organisation or None for cross-domain, the store's number) of a DING id
    (``ValueError`` for another kind of id)."""
    prefix, _, number = ding.partition(":")
    if not number.isdigit():
        raise ValueError(f"not a DING id: {ding!r}")
    if prefix == "x":
        return None, int(number)
    if prefix[:1] == "o" and prefix[1:].isdigit():
        return int(prefix[1:]), int(number)
    raise ValueError(f"not a DING id: {ding!r}")


def ding_number(ding: str) -> int:
    """The store's number for a DING id (``ValueError`` for another kind of id)."""
    return parse_ding_id(ding)[1]


def parse_ding_cursor(cursor: str) -> dict[str, int]:
    """The positions of a ``DingCursor``: ``{"x": n, "o": m}``, a store absent when the
    cursor does not name it."""
    positions: dict[str, int] = {}
    for part in cursor.split(","):
        store, _, number = part.partition(":")
        if store not in ("x", "o") or not number.isdigit() or store in positions:
            raise ValueError(f"not a DING cursor: {cursor!r}")
        positions[store] = int(number)
    return positions


def ding_cursor(positions: dict[str, int]) -> str:
    """The ``DingCursor`` of per-store positions (``x`` first)."""
    return ",".join(f"{store}:{positions[store]}" for store in ("x", "o") if store in positions)


class DingPlan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """The escalation of each recipient who has not confirmed: an SMS ``sms_after_s`` seconds
    after the DING went out, a call ``call_after_s`` seconds after it went out (null: no such
    step; 0: from the start). The in-app DING always goes out first."""

    sms_after_s: DelaySeconds | None = None
    call_after_s: DelaySeconds | None = None


# --- requests ---------------------------------------------------------------------------------


class DingSend(Request, tag="ding.send", frozen=True):
    """Send a DING to people the caller shares a conversation with. Without ``plan`` the
    server's default plan applies; with ``send_at`` in the future it goes out then. With
    ``org`` it is sent in that organisation's context, whose package pays (G2)."""

    cmid: ClientMessageId
    recipients: Recipients
    text: DingText
    plan: DingPlan | None = None
    send_at: Timestamp | None = None
    org: OrgId | None = None


class DingCancel(Request, tag="ding.cancel", frozen=True):
    """Cancel a scheduled DING before it goes out (the sender only)."""

    ding_id: DingId


class DingConfirm(Request, tag="ding.confirm", frozen=True):
    """The recipient confirms: once acknowledged, no further step starts for them."""

    ding_id: DingId


class DingRead(Request, tag="ding.read", frozen=True):
    """The recipient has seen the DING (without confirming it)."""

    ding_id: DingId


class DingRedding(Request, tag="ding.redding", frozen=True):
    """Send the DING again to the recipients who have not confirmed, restarting their
    escalation (the sender only, at most once per re-DING interval)."""

    ding_id: DingId


class DingGet(Request, tag="ding.get", frozen=True):
    ding_id: DingId


class DingListSent(Request, tag="ding.sent", frozen=True):
    """The caller's DINGs, newest first, before ``before`` (exclusive; null: the newest)."""

    before: DingCursor | None = None
    limit: PageLimit = limits.DEFAULT_PAGE


class DingListReceived(Request, tag="ding.received", frozen=True):
    """DINGs the caller received, newest first, before ``before`` (exclusive)."""

    before: DingCursor | None = None
    limit: PageLimit = limits.DEFAULT_PAGE


class OrgDingTopup(Request, tag="org.ding_topup", frozen=True):
    """G2: an admin with the ``members`` permission adds ``units`` to the organisation's
    DING package for ``channel``. Idempotent by ``cmid``: a resend adds nothing."""

    cmid: ClientMessageId
    org: OrgId
    channel: PaidChannel
    units: TopupUnits


class OrgDingQuota(Request, tag="org.ding_quota", frozen=True):
    """G2: the organisation's DING package: what is left per channel, and who used it."""

    org: OrgId


DingRequest = (
    DingSend
    | DingCancel
    | DingConfirm
    | DingRead
    | DingRedding
    | DingGet
    | DingListSent
    | DingListReceived
    | OrgDingTopup
    | OrgDingQuota
)


# --- results ----------------------------------------------------------------------------------


class DingStep(Result, frozen=True):
    """One step of one recipient's escalation."""

    channel: DingChannel
    round: int
    state: DingStepState
    due_at: Timestamp
    changed_at: Timestamp | None


class DingRecipient(Result, frozen=True):
    """G3: what the sender sees of one recipient."""

    user_id: UserId
    delivered_at: Timestamp | None
    read_at: Timestamp | None
    confirmed_at: Timestamp | None
    steps: list[DingStep]


class DingInfo(Result, frozen=True):
    """A DING as the caller may see it: the sender sees every recipient, a recipient only
    themself."""

    ding_id: DingId
    sender: UserId
    text: str
    state: DingState
    created_at: Timestamp
    send_at: Timestamp
    plan: DingPlan
    round: int
    round_at: Timestamp
    recipients: list[DingRecipient]


class DingSent(Result, frozen=True):
    ding: DingInfo
    duplicate: bool


class Ding(Result, frozen=True):
    ding: DingInfo


class DingPage(Result, frozen=True):
    dings: list[DingInfo]
    next_before: DingCursor | None


class DingMemberUse(Result, frozen=True):
    """Units of a package one member's DINGs used."""

    user: UserId
    used: int


class DingPackage(Result, frozen=True):
    """An organisation's DING package for one channel."""

    channel: PaidChannel
    granted: int
    used: int
    remaining: int
    members: list[DingMemberUse]


class DingQuota(Result, frozen=True):
    org: OrgId
    packages: list[DingPackage]


DING_RESULT_TYPES: dict[type[Request], type[Result]] = {
    DingSend: DingSent,
    DingCancel: Ding,
    DingConfirm: Ding,
    DingRead: Ding,
    DingRedding: Ding,
    DingGet: Ding,
    DingListSent: DingPage,
    DingListReceived: DingPage,
    OrgDingTopup: DingQuota,
    OrgDingQuota: DingQuota,
}


# --- events -----------------------------------------------------------------------------------


class DingEvent(Event, tag="ev.ding", frozen=True):
    """A DING for the receiving user (a priority event: alert until confirmed). Sent again,
    with the next ``round``, on a re-DING."""

    ding_id: DingId
    sender: UserId
    text: str
    ts: Timestamp
    round: int


class DingStatusEvent(Event, tag="ev.ding.status", omit_defaults=True, frozen=True):
    """A DING's state or one recipient's status changed. Pushed to the sender's devices
    and, for ``recipient``, to that recipient's own devices."""

    ding_id: DingId
    state: DingState
    recipient: DingRecipient | None = None


DingEvents = DingEvent | DingStatusEvent
