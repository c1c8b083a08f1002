"""The source key of an organisation's copy: which entry it was made from.

A copy is keyed by its source so the outbox relay, which runs at least once, makes it once.
For a cross-domain message the key is the entry's stream position, which tells the
organisation nothing about the conversation (D4). For a message of the organisation's own
conversation (D2) it names the message, ``org:<conv>:<seq>``: that data is the
organisation's, and the name lets an admin's recall reach it for everyone (O1).
"""

from __future__ import annotations

from storage.records import Entry


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
