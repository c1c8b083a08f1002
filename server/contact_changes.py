"""A change to a contact row, and the ``ev.contact`` its owner's devices get (M5): one way
to write it, for the contact requests (``services/contacts.py``) and for the erasure of an
account (``account_deletion.py``, A1)."""

from __future__ import annotations

import msgspec

from protocol.events import ContactEvent
from storage.records import ContactRow, ContactStateName, ContactWrite

_encoder = msgspec.msgpack.Encoder()


def contact_write(
    owner: int, peer: int, state: ContactStateName | None, note: str, now: int
) -> ContactWrite:
    """The row to write (``None``: deleted) with its entry in the owner's personal stream."""
    event = ContactEvent(pstream=0, user_id=peer, state=state or "none", note=note)
    return ContactWrite(
        row=ContactRow(owner=owner, peer=peer, state=state, note=note, updated_at=now),
        event_body=_encoder.encode(event),
    )


def contact_event(write: ContactWrite, pstream: int) -> ContactEvent:
    """The live event of ``write``, committed at ``pstream``."""
    row = write.row
    return ContactEvent(pstream=pstream, user_id=row.peer, state=row.state or "none", note=row.note)
