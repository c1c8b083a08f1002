"""G2: who pays for a DING's SMS and call steps, and how much there is.

A ``QuotaLedger`` turns a DING's payer and a channel into a ``QuotaCharge``: the account,
the period and the grant a new period starts with. The store then consumes the charge in
the same transaction that hands the step over (``DingStore.hand_over``), or marks the step
``quota_exhausted``: the decision here is pure, the count is atomic there.

Payers are strings chosen when the DING is sent (``server.policy.ding_payer``):

* ``user:<id>``: a personal sender. ``PersonalAllowance`` gives every user a free monthly
  allowance per channel, months counted in a configured time zone (the G2 decision).
* ``org:<org id>/user:<member id>``: a member sending in an organisation's context (the G2
  decision: a sender in several organisations picks one, which pays). ``OrgPackages``
  charges the package's account ``org:<org id>`` in the fixed period ``PACKAGE_PERIOD``
  with a grant of 0: only ``DingStore.top_up`` (``org.ding_topup``) fills it, and each unit
  used is recorded against the member.

``Ledgers`` is the server's ledger: it hands each payer to the one that keeps it.
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


#: The one period of an organisation's package: units bought do not expire.
PACKAGE_PERIOD = "package"


def personal_payer(user_id: int) -> str:
    return f"user:{user_id}"


def package_account(org_id: int) -> str:
    """The quota account of an organisation's DING package."""
    return f"org:{org_id}"


def org_payer(org_id: int, member: int) -> str:
    """A DING ``member`` sends in the context of organisation ``org_id``."""
    return f"{package_account(org_id)}/{personal_payer(member)}"


def payer_org(payer: str) -> int | None:
    """The organisation whose package pays (``org:<org>/user:<member>``), or None for a
    personal payer."""
    account, _, _member = payer.partition("/")
    kind, _, org = account.partition(":")
    return int(org) if kind == "org" and org.isdigit() else None


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


class OrgPackages:
    """Organisations' DING packages: a payer ``org:<org>/user:<member>`` is charged to the
    package ``org:<org>`` (period ``PACKAGE_PERIOD``, nothing granted but top-ups), the unit
    recorded against ``member``."""

    def charge(self, *, payer: str, channel: ChannelName, now_ms: int) -> QuotaCharge:
        account, _, member = payer.partition("/")
        kind, _, org = account.partition(":")
        user_kind, _, user = member.partition(":")
        valid = kind == "org" and user_kind == "user" and org.isdigit() and user.isdigit()
        if not valid or channel == "in_app":
            raise ValueError(f"no organisation package pays for {payer} {channel}")
        return QuotaCharge(
            account=account, channel=channel, period=PACKAGE_PERIOD, grant=0, member=int(user)
        )


class Ledgers:
    """The server's ledger: organisation payers to ``packages``, personal ones to
    ``personal``."""

    def __init__(self, *, personal: QuotaLedger, packages: QuotaLedger) -> None:
        self._personal = personal
        self._packages = packages

    def charge(self, *, payer: str, channel: ChannelName, now_ms: int) -> QuotaCharge:
        ledger = self._packages if payer.startswith("org:") else self._personal
        return ledger.charge(payer=payer, channel=channel, now_ms=now_ms)
