"""G2: who pays for a DING's SMS and call steps, and how much there is.

A ``QuotaLedger`` turns a DING's payer and a channel into a ``QuotaCharge``: the account,
the period and the grant a new period starts with. The store then consumes the charge in
the same transaction that hands the step over (``DingStore.hand_over``), or marks the step
``quota_exhausted``: the decision here is pure, the count is atomic there.

Payers are strings chosen when the DING is sent (``server.policy.ding_payer``):

* ``user:<id>``: a personal sender. ``PersonalAllowance`` gives every user a free monthly
  allowance per channel, months counted in a configured time zone (the G2 decision).
* An organisation's package (``org:<id>``, D2) slots in as another ``QuotaLedger`` whose
  charges name the package's account with no monthly period and a grant of 0, filled by
  ``DingStore.top_up`` when its admins buy units.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from storage.ding_records import ChannelName, QuotaCharge


class QuotaLedger(Protocol):
    def charge(self, *, payer: str, channel: ChannelName, now_ms: int) -> QuotaCharge:
        """What one ``channel`` step of a DING paid by ``payer`` costs at ``now_ms``.
        ``ValueError`` for a payer this ledger does not keep."""


def personal_payer(user_id: int) -> str:
    return f"user:{user_id}"


class PersonalAllowance:
    """Personal users' free allowance: ``sms`` SMS steps and ``calls`` call steps per
    calendar month in ``timezone`` (an IANA name such as ``Asia/Shanghai``)."""

    def __init__(self, *, sms: int, calls: int, timezone: str = "UTC") -> None:
        if sms < 0 or calls < 0:
            raise ValueError("allowances must not be negative")
        self._grants: dict[ChannelName, int] = {"sms": sms, "call": calls}
        self._zone = ZoneInfo(timezone)

    def period(self, now_ms: int) -> str:
        """The month ``now_ms`` falls in, in the ledger's time zone: ``YYYY-MM``."""
        local = datetime.fromtimestamp(now_ms / 1000, tz=UTC).astimezone(self._zone)
        return f"{local.year:04d}-{local.month:02d}"

    def charge(self, *, payer: str, channel: ChannelName, now_ms: int) -> QuotaCharge:
        kind, _, number = payer.partition(":")
        if kind != "user" or not number.isdigit() or channel == "in_app":
            raise ValueError(f"the personal allowance does not pay for {payer} {channel}")
        return QuotaCharge(
            account=payer,
            channel=channel,
            period=self.period(now_ms),
            grant=self._grants[channel],
            member=int(number),
        )
