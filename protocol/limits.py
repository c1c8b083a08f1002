"""Every size and count limit of the protocol, named, in one place.

The handshake reply sends the client the subset it needs (see ``ClientLimits`` in
``protocol.replies``), so clients never hard-code them. Server-side rates and quotas that
operators tune live in ``server.config`` and default to the constants here.
"""

from typing import Final

#: Largest WebSocket message (after reassembly) the server accepts; larger closes with 1009.
MAX_FRAME_BYTES: Final = 64 * 1024
#: Deepest MessagePack nesting accepted anywhere in a frame, unknown fields included.
MAX_DEPTH: Final = 16
#: Text of one message, in characters.
MAX_TEXT_CHARS: Final = 8_000
#: Short strings: titles, names, file names, mime types, device names.
MAX_NAME_CHARS: Final = 128
#: O5: an organisation's disclosure text, shown before anyone joins.
MAX_DISCLOSURE_CHARS: Final = 4_000
#: Opaque ids sent by clients: client message ids, conversation ids, tokens.
MAX_ID_CHARS: Final = 128
#: Tokens (access, refresh, QR) are longer than ids.
MAX_TOKEN_CHARS: Final = 1024
#: Users named in one request (mentions, group members added at once, presence subscriptions).
MAX_USERS_PER_REQUEST: Final = 500
#: Items in one page of history, sync events or member lists.
MAX_PAGE: Final = 500
DEFAULT_PAGE: Final = 100
#: Ids and sequence numbers stay below 2**53 so JavaScript clients read them exactly.
MAX_SAFE_INT: Final = 2**53 - 1
#: Default member limit of an ordinary group (configurable per server).
DEFAULT_GROUP_MEMBER_LIMIT: Final = 500
#: M2: the most members a paid expansion may raise a group to (the top tier).
MAX_GROUP_MEMBER_LIMIT: Final = 10_000
#: M2: units one ``org.group_topup`` may add to an organisation's group-expansion package.
MAX_GROUP_TOPUP_UNITS: Final = 1_000_000
#: How long an unauthenticated connection may live before it is closed with 4001.
HANDSHAKE_DEADLINE_SECONDS: Final = 10.0
#: Idempotency keys (sender, client message id) are kept at least this long.
IDEMPOTENCY_TTL_SECONDS: Final = 24 * 3600
#: A sender may recall their own message within this window (M4).
RECALL_WINDOW_SECONDS: Final = 24 * 3600
#: Phone numbers: E.164, a plus and up to 15 digits.
MAX_PHONE_CHARS: Final = 16
#: One-time login codes.
LOGIN_CODE_DIGITS: Final = 6
#: L1 live streams: a WebRTC signal's payload (an SDP or an ICE candidate), in characters.
#: SDP is ASCII, so this is about 16 KB; 4-byte characters still fit in MAX_FRAME_BYTES.
MAX_SIGNAL_CHARS: Final = 16_000
#: L1: characters in a live stream's description.
MAX_LIVE_DESCRIPTION_CHARS: Final = 1_000
#: L1: groups a stream can be linked to besides the one it started in.
MAX_LIVE_LINKED_GROUPS: Final = 20
#: L1: likes one ``live.like`` may carry.
MAX_LIKES_PER_REQUEST: Final = 100
#: L1: users a stream's host may invite explicitly, in total.
MAX_LIVE_INVITES: Final = 5_000
#: L1 defaults of the server's configuration: co-hosts on stage at once, seconds a host has
#: to come back after a disconnect or a restart, seconds between coalesced count events.
DEFAULT_LIVE_COHOSTS: Final = 4
DEFAULT_LIVE_GRACE_SECONDS: Final = 60.0
DEFAULT_LIVE_COUNTS_SECONDS: Final = 1.0
#: Recipients of one DING (G1).
MAX_DING_RECIPIENTS: Final = 100
#: Longest escalation delay of a DING plan, and how far ahead a DING may be scheduled.
MAX_DING_DELAY_SECONDS: Final = 7 * 24 * 3600
#: Units one ``org.ding_topup`` may add to an organisation's DING package (G2).
MAX_DING_TOPUP_UNITS: Final = 1_000_000
#: C1: characters in the note of a report to the platform's moderators.
MAX_REPORT_NOTE_CHARS: Final = 1_000
