"""``rivet serve`` flags of DING messages (G1-G3) and of the Notifier they escalate through.

The webhook secret comes from ``--webhook-secret``, else the ``RIVET_WEBHOOK_SECRET``
environment variable (preferred: command lines are visible to other users of the machine),
else the TOML file.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Final

SECRET_ENV: Final = "RIVET_WEBHOOK_SECRET"

#: Config fields set by the flags below (argparse dest = field name).
DING_FLAGS: Final = (
    "ding_sms_after_seconds",
    "ding_call_after_seconds",
    "ding_redding_interval_seconds",
    "ding_personal_sms_per_month",
    "ding_personal_calls_per_month",
    "ding_quota_timezone",
    "ding_recipient_per_minute",
    "ding_recipient_burst",
    "ding_rate_per_second",
    "ding_burst",
    "notifier",
    "webhook_url",
    "webhook_secret",
    "webhook_timeout_seconds",
    "webhook_max_attempts",
)


def add_ding_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ding-rate",
        dest="ding_rate_per_second",
        type=float,
        help="C2: ding.send per sender per second (default 0.2)",
    )
    p.add_argument(
        "--ding-burst",
        dest="ding_burst",
        type=int,
        help="C2: ding.send burst per sender (default 10)",
    )
    p.add_argument(
        "--ding-sms-after",
        dest="ding_sms_after_seconds",
        type=int,
        help="G1: default plan: SMS this many seconds after a DING, if unconfirmed "
        "(default 300; negative: none)",
    )
    p.add_argument(
        "--ding-call-after",
        dest="ding_call_after_seconds",
        type=int,
        help="G1: default plan: call this many seconds after a DING, if unconfirmed "
        "(default 900; negative: none)",
    )
    p.add_argument(
        "--ding-redding-interval",
        dest="ding_redding_interval_seconds",
        type=float,
        help="G3: seconds between re-DINGs of one DING (default 300)",
    )
    p.add_argument(
        "--ding-personal-sms",
        dest="ding_personal_sms_per_month",
        type=int,
        help="G2: free SMS steps per personal user per month (default 10)",
    )
    p.add_argument(
        "--ding-personal-calls",
        dest="ding_personal_calls_per_month",
        type=int,
        help="G2: free call steps per personal user per month (default 3)",
    )
    p.add_argument(
        "--ding-quota-timezone",
        help="G2: IANA time zone in which allowance months are counted (default UTC)",
    )
    p.add_argument(
        "--ding-recipient-per-minute",
        type=float,
        help="C2: DINGs one person may receive per minute (default 6, burst 10)",
    )
    p.add_argument(
        "--ding-recipient-burst", type=int, help="C2: DINGs one person may receive at once"
    )
    p.add_argument(
        "--notifier",
        choices=["outbox", "webhook"],
        help="where SMS, calls and login codes go (default outbox: see 'rivet outbox')",
    )
    p.add_argument("--webhook-url", help="the webhook notifier's URL (http:// or https://)")
    p.add_argument(
        "--webhook-secret",
        help=f"HMAC secret of the webhook signature (better: the {SECRET_ENV} variable)",
    )
    p.add_argument(
        "--webhook-timeout-seconds", type=float, help="seconds per webhook request (default 10)"
    )
    p.add_argument("--webhook-max-attempts", type=int, help="attempts per notification (default 5)")


def ding_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides of the flags above (None where a flag was not given)."""
    overrides = {name: getattr(args, name) for name in DING_FLAGS}
    if overrides["webhook_secret"] is None:
        overrides["webhook_secret"] = os.environ.get(SECRET_ENV) or None
    return overrides
