"""Constrained scalar types shared by requests, replies and events.

Constraints are checked at decode (house habit 2): a value outside them never reaches the
server's logic. Integers stay below 2**53 so JavaScript clients read them exactly.
"""

from typing import Annotated, Literal

from msgspec import Meta

from protocol import limits

UserId = Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)]
DeviceId = Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)]
RequestId = Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)]
Seq = Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)]
StreamPos = Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)]
MessageId = Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)]
Timestamp = Annotated[int, Meta(ge=0, le=limits.MAX_SAFE_INT)]
"""Milliseconds since the Unix epoch, UTC."""

#: ``d:<low user id>:<high user id>`` for a single chat, ``s:<user id>`` for chat with
#: oneself, ``g:<number>`` for a group. Deterministic for single chats (see ``ids.py``).
#: D2: ``o:<organisation id>:`` before a single chat or group id names an
#: organisation-internal conversation, kept in that organisation's store.
ConversationId = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=64,
        pattern=(r"^((o:[1-9][0-9]*:)?(d:[1-9][0-9]*:[1-9][0-9]*|g:[1-9][0-9]*)|s:[1-9][0-9]*)$"),
    ),
]
OrgId = Annotated[int, Meta(ge=1, le=limits.MAX_SAFE_INT)]
ClientMessageId = Annotated[str, Meta(min_length=1, max_length=limits.MAX_ID_CHARS)]
Text = Annotated[str, Meta(max_length=limits.MAX_TEXT_CHARS)]
Name = Annotated[str, Meta(min_length=1, max_length=limits.MAX_NAME_CHARS)]
Token = Annotated[str, Meta(min_length=1, max_length=limits.MAX_TOKEN_CHARS)]
Phone = Annotated[
    str, Meta(min_length=4, max_length=limits.MAX_PHONE_CHARS, pattern=r"^\+[1-9][0-9]{3,14}$")
]
LoginCode = Annotated[str, Meta(min_length=4, max_length=12, pattern=r"^[0-9]+$")]
PageLimit = Annotated[int, Meta(ge=1, le=limits.MAX_PAGE)]
UserList = Annotated[list[UserId], Meta(max_length=limits.MAX_USERS_PER_REQUEST)]
SeqList = Annotated[list[Seq], Meta(max_length=limits.MAX_PAGE)]
Role = Literal["owner", "admin", "member"]
AssignableRole = Literal["admin", "member"]
ContentKind = Literal["text", "file", "image"]
