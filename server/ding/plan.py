"""A DING's channel plan (G1): which steps each recipient gets, and when.

The in-app DING always goes out first, when the DING (or a re-DING round) goes out; then,
while the recipient has not confirmed, an SMS ``sms_after_s`` seconds later and a call
``call_after_s`` seconds later (both counted from the round's start; 0 means from the
start, null means never). A DING sent without a plan gets the server's default plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from protocol import ding as pd
from protocol.errors import ErrorCode, ProtocolError
from storage.ding_records import NewStep


@dataclass(frozen=True, slots=True)
class Plan:
    sms_after_s: int | None
    call_after_s: int | None


def resolve_plan(requested: pd.DingPlan | None, *, default: Plan) -> Plan:
    """The plan a DING gets: the requested one if any, checked, else the default."""
    if requested is None:
        return default
    sms, call = requested.sms_after_s, requested.call_after_s
    if sms is not None and call is not None and call < sms:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD,
            "the call comes after the SMS: call_after_s must not be less than sms_after_s",
            path="$.plan.call_after_s",
        )
    return Plan(sms_after_s=sms, call_after_s=call)


def round_steps(
    recipients: Iterable[int], *, start_ms: int, plan: Plan, released: bool
) -> list[NewStep]:
    """The steps of one round starting at ``start_ms``. ``released``: the in-app step goes
    out with the write (``sent``), else it waits for ``start_ms`` (a scheduled DING)."""
    steps: list[NewStep] = []
    for user in recipients:
        steps.append(
            NewStep(
                user_id=user,
                channel="in_app",
                due_at=start_ms,
                state="sent" if released else "scheduled",
            )
        )
        if plan.sms_after_s is not None:
            steps.append(
                NewStep(user_id=user, channel="sms", due_at=start_ms + plan.sms_after_s * 1000)
            )
        if plan.call_after_s is not None:
            steps.append(
                NewStep(user_id=user, channel="call", due_at=start_ms + plan.call_after_s * 1000)
            )
    return steps
