"""Group live streams (rule L1): the signalling ops, their results and events.

A live stream is a broadcast from a host to the members of one or more groups. Rivet carries
only the control plane: starting, joining, viewer counts, co-host requests, the WebRTC
offer/answer/ICE relay between two devices of the same stream, likes, and ending. Media never
passes through the server. ``docs/live.md`` describes the lifecycle; ``docs/protocol.md`` has
an entry for each op and event below.

Every event here is ephemeral: never stored, never in ``sync``. A device that was offline
asks ``live.active`` for a group's current stream.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from protocol import limits
from protocol.events import Event
from protocol.replies import Done, Result
from protocol.requests import Request
from protocol.types import ConversationId, DeviceId, Name, PageLimit, Timestamp, UserId

#: ``<group id>/<n>``: the n-th stream started in that group, e.g. ``g:7/3`` (or
#: ``o:5:g:7/3`` in an organisation's own group). The group in the id is where the stream
#: started, whose store keeps its record.
LiveId = Annotated[
    str,
    Meta(min_length=5, max_length=64, pattern=r"^(o:[1-9][0-9]*:)?g:[1-9][0-9]*/[1-9][0-9]*$"),
]
SignalKind = Literal["offer", "answer", "ice"]
LiveRole = Literal["host", "cohost", "viewer"]
#: ``host``: the host ended it; ``admin``: an owner or admin of the group it started in;
#: ``host_left``: the host did not come back within the grace period.
LiveEndReason = Literal["host", "admin", "host_left"]

Description = Annotated[str, Meta(max_length=limits.MAX_LIVE_DESCRIPTION_CHARS)]
LinkedGroups = Annotated[list[ConversationId], Meta(max_length=limits.MAX_LIVE_LINKED_GROUPS)]
SignalPayload = Annotated[str, Meta(min_length=1, max_length=limits.MAX_SIGNAL_CHARS)]


def live_id(origin: str, number: int) -> str:
    """The id of the ``number``-th stream started in group ``origin``."""
    return f"{origin}/{number}"


def parse_live_id(value: str) -> tuple[str, int]:
    """``(origin group, number)`` of a live id that passed decoding."""
    origin, _, number = value.partition("/")
    return origin, int(number)


# --- requests --------------------------------------------------------------------------------


class LiveStart(Request, tag="live.start", frozen=True):
    """Go live in group ``conv``, optionally linked at once to other groups of the caller."""

    conv: ConversationId
    title: Name
    description: Description = ""
    link_groups: LinkedGroups = msgspec.field(default_factory=list)


class LiveLink(Request, tag="live.link", frozen=True):
    """The host links the stream to more groups they belong to."""

    live_id: LiveId
    groups: Annotated[
        list[ConversationId], Meta(min_length=1, max_length=limits.MAX_LIVE_LINKED_GROUPS)
    ]


class LiveActive(Request, tag="live.active", frozen=True):
    """The stream active in group ``conv`` now, if any."""

    conv: ConversationId


class LiveJoin(Request, tag="live.join", frozen=True):
    live_id: LiveId


class LiveLeave(Request, tag="live.leave", frozen=True):
    live_id: LiveId


class LiveViewers(Request, tag="live.viewers", frozen=True):
    """A page of the users watching, ascending by user id, after ``after``."""

    live_id: LiveId
    after: Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)] = 0
    limit: PageLimit = limits.DEFAULT_PAGE


class LiveInvite(Request, tag="live.invite", frozen=True):
    live_id: LiveId
    users: Annotated[list[UserId], Meta(min_length=1, max_length=limits.MAX_USERS_PER_REQUEST)]


class LiveRaiseHand(Request, tag="live.raise_hand", frozen=True):
    """A viewer asks to co-host (``raised`` false withdraws the request)."""

    live_id: LiveId
    raised: bool = True


class LiveAnswerHand(Request, tag="live.answer_hand", frozen=True):
    live_id: LiveId
    user: UserId
    accept: bool


class LiveRemove(Request, tag="live.remove", frozen=True):
    """The host takes a co-host off the stage, or removes a viewer from the stream."""

    live_id: LiveId
    user: UserId


class LiveSignal(Request, tag="live.signal", frozen=True):
    """Relay a WebRTC message to one device of another participant of the stream."""

    live_id: LiveId
    to_device: DeviceId
    kind: SignalKind
    payload: SignalPayload


class LiveLike(Request, tag="live.like", frozen=True):
    live_id: LiveId
    count: Annotated[int, Meta(ge=1, le=limits.MAX_LIKES_PER_REQUEST)] = 1


class LiveEnd(Request, tag="live.end", frozen=True):
    live_id: LiveId


class LiveResume(Request, tag="live.resume", frozen=True):
    """The host takes the stream back on this connection (after a disconnect or a server
    restart, within the grace period; or to move it to another device)."""

    live_id: LiveId


LiveRequest = (
    LiveStart
    | LiveLink
    | LiveActive
    | LiveJoin
    | LiveLeave
    | LiveViewers
    | LiveInvite
    | LiveRaiseHand
    | LiveAnswerHand
    | LiveRemove
    | LiveSignal
    | LiveLike
    | LiveEnd
    | LiveResume
)


# --- results ---------------------------------------------------------------------------------


class LiveInfo(Result, frozen=True):
    live_id: LiveId
    conv: ConversationId
    host: UserId
    title: str
    description: str
    groups: list[ConversationId]
    started_at: Timestamp
    host_online: bool


class StageMember(msgspec.Struct, frozen=True, kw_only=True):
    """A device whose media viewers watch: the host's, or a co-host's."""

    user: UserId
    device: DeviceId
    role: LiveRole


class LiveJoined(Result, frozen=True):
    live: LiveInfo
    role: LiveRole
    stage: list[StageMember]
    viewers: int
    total_likes: int
    hands: list[UserId]


class LiveState(Result, frozen=True):
    live: LiveInfo | None


class LiveViewerPage(Result, frozen=True):
    live_id: LiveId
    viewers: list[UserId]
    next_after: int | None


class LiveSummary(Result, frozen=True):
    live_id: LiveId
    reason: LiveEndReason
    ended_at: Timestamp
    peak_viewers: int
    total_viewers: int


LIVE_RESULT_TYPES: dict[type[Request], type[Result]] = {
    LiveStart: LiveJoined,
    LiveLink: LiveState,
    LiveActive: LiveState,
    LiveJoin: LiveJoined,
    LiveLeave: Done,
    LiveViewers: LiveViewerPage,
    LiveInvite: Done,
    LiveRaiseHand: Done,
    LiveAnswerHand: Done,
    LiveRemove: Done,
    LiveSignal: Done,
    LiveLike: Done,
    LiveEnd: LiveSummary,
    LiveResume: LiveJoined,
}


# --- events (all ephemeral) ------------------------------------------------------------------


class LiveStartedEvent(Event, tag="ev.live.started", frozen=True):
    live: LiveInfo


class LiveEndedEvent(Event, tag="ev.live.ended", frozen=True):
    live_id: LiveId
    reason: LiveEndReason
    ended_at: Timestamp
    peak_viewers: int
    total_viewers: int


class LiveCountsEvent(Event, tag="ev.live.counts", frozen=True):
    """Viewers now and likes since the previous one, coalesced per interval."""

    live_id: LiveId
    viewers: int
    likes: int
    total_likes: int


class LiveHostEvent(Event, tag="ev.live.host", frozen=True):
    live_id: LiveId
    online: bool
    device: DeviceId | None
    resume_by: Timestamp | None


class LiveHandEvent(Event, tag="ev.live.hand", frozen=True):
    live_id: LiveId
    user: UserId
    device: DeviceId
    raised: bool


class LiveCohostEvent(Event, tag="ev.live.cohost", frozen=True):
    live_id: LiveId
    user: UserId
    device: DeviceId
    cohost: bool


class LiveRemovedEvent(Event, tag="ev.live.removed", frozen=True):
    live_id: LiveId


class LiveSignalEvent(Event, tag="ev.live.signal", frozen=True):
    live_id: LiveId
    from_user: UserId
    from_device: DeviceId
    kind: SignalKind
    payload: str


class LiveInvitedEvent(Event, tag="ev.live.invited", frozen=True):
    live: LiveInfo


LiveEvent = (
    LiveStartedEvent
    | LiveEndedEvent
    | LiveCountsEvent
    | LiveHostEvent
    | LiveHandEvent
    | LiveCohostEvent
    | LiveRemovedEvent
    | LiveSignalEvent
    | LiveInvitedEvent
)
