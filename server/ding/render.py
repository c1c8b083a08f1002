"""DING records as the protocol shows them, cut to what each viewer may see (G3).

The sender sees every recipient's status; a recipient sees the DING and only their own row
(never who else was DINGed, nor their answers).
"""

from __future__ import annotations

from protocol import ding as pd
from server.ding.quota import payer_org
from storage.ding_records import Ding, DingRecipient


def public_ding_id(ding: Ding) -> str:
    """The protocol's id of a stored DING, naming its store (D2/D3): ``x:<n>`` for the
    cross-domain store, ``o<org>:<n>`` for organisation ``org``'s (an organisation-internal
    DING is always paid by its organisation, so its payer names it)."""
    if ding.domain == "cross":
        return pd.ding_id(ding.ding_id)
    org = payer_org(ding.payer)
    if org is None:
        raise ValueError(f"an organisation's DING without an organisation payer: {ding.payer}")
    return pd.ding_id(ding.ding_id, org)


def recipient_status(row: DingRecipient) -> pd.DingRecipient:
    return pd.DingRecipient(
        user_id=row.user_id,
        delivered_at=row.delivered_at,
        read_at=row.read_at,
        confirmed_at=row.confirmed_at,
        steps=[
            pd.DingStep(
                channel=s.channel,
                round=s.round,
                state=s.state,
                due_at=s.due_at,
                changed_at=s.changed_at,
            )
            for s in row.steps
        ],
    )


def ding_info(ding: Ding, viewer: int) -> pd.DingInfo:
    """``ding`` as ``viewer`` (its sender or one of its recipients) may see it."""
    rows = [
        recipient_status(row)
        for row in ding.recipients
        if viewer == ding.sender or row.user_id == viewer
    ]
    return pd.DingInfo(
        ding_id=public_ding_id(ding),
        sender=ding.sender,
        text=ding.text,
        state=ding.state,
        created_at=ding.created_at,
        send_at=ding.send_at,
        plan=pd.DingPlan(sms_after_s=ding.sms_after_s, call_after_s=ding.call_after_s),
        round=ding.round,
        round_at=ding.round_at,
        recipients=rows,
    )


def ding_event(ding: Ding) -> pd.DingEvent:
    """The priority event each recipient gets when a round goes out."""
    return pd.DingEvent(
        ding_id=public_ding_id(ding),
        sender=ding.sender,
        text=ding.text,
        ts=ding.round_at,
        round=ding.round,
    )


def status_event(ding: Ding, row: DingRecipient | None) -> pd.DingStatusEvent:
    return pd.DingStatusEvent(
        ding_id=public_ding_id(ding),
        state=ding.state,
        recipient=recipient_status(row) if row is not None else None,
    )
