"""The source key of an organisation's copy: which entry it was made from.

A copy is keyed by its source so the outbox relay, which runs at least once, makes it once.
For a cross-domain message the key is the entry's stream position, which tells the
organisation nothing about the conversation (D4). For a message of the organisation's own
conversation (D2) it names the message, ``org:<conv>:<seq>``: that data is the
organisation's, and the name lets an admin's recall reach it for everyone (O1). For a DING
(issue #4) it is ``ding:<x|o>:<number>``: the DING store and the DING's number there (the
two stores' numbers overlap). No admin act follows it: a DING is never rewritten by an
admin; it only tells admins that the copy is of a DING (``CopyInfo.origin``).
"""

from __future__ import annotations

from typing import Literal

from storage.ding_records import DingDomain, domain_prefix
from storage.records import Entry

DING_PREFIX = "ding:"


def copy_source(store: str, entry: Entry) -> str:
    """The copy's key: ``store`` is "cross" or "org", the conversation store of ``entry``."""
    if store == "org":
        return f"org:{entry.conv_id}:{entry.seq}"
    return f"{store}:{entry.stream}"


def org_conversation_source(source: str) -> tuple[str, int] | None:
    """(conv, seq) of the organisation-internal message a copy was made from, else None."""
    if not source.startswith("org:"):
        return None
    conv, _, seq = source[len("org:") :].rpartition(":")
    return conv, int(seq)


def ding_copy_source(domain: DingDomain, ding_id: int) -> str:
    """The copy's key for DING ``ding_id`` of the DING store ``domain``."""
    return f"{DING_PREFIX}{domain_prefix(domain)}:{ding_id}"


def copy_origin(source: str) -> Literal["message", "ding"]:
    """What a copy was made from, by its key: a DING's, or a message's."""
    return "ding" if source.startswith(DING_PREFIX) else "message"
