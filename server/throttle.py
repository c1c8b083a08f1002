"""Rate limits and the flood rule (C2: spam and unauthorised promotion are limited).

Three layers, checked by the router in this order for every frame:

1. **Every frame** (``request_rate_per_second`` / ``request_burst``), charged before the
   frame is decoded, so empty frames, garbage and ``ping`` ops cost the same as any request
   and a flood of them is refused without decoding it: to the connection's budget, and once
   it is authenticated to the user's too (all their connections together), so a flooder who
   reconnects does not start with a fresh budget.
2. **Per user, by budget** (all of the user's connections together, so opening more
   connections buys nothing): ``message`` (``msg.send``), ``ding`` (``ding.send``,
   ``ding.redding``: they can escalate to SMS and calls), ``signal`` (``ping``, ``typing``,
   ``presence.subscribe`` and every ``live.*`` op: WebRTC relay, likes, joins), ``report``
   (C1 reports). Other ops only draw on the connection's budget.
3. **Flood**: each refusal takes a strike from a bucket of ``flood_strikes`` strikes that
   refills one strike a second, the user's once authenticated (the connection's before). A
   client that keeps sending while refused runs out and is closed with 4051, and so is a
   connection of that user that is refused again before the strikes refill: reconnecting
   buys a flooder nothing. A client that waits ``retry_after`` as told is never closed.

A refused frame gets ``rate_limited`` (4000, retryable) with ``retry_after`` and is not
handled; nothing of it is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from server.config import Config
from server.ratelimit import KeyedLimiter

Budget = Literal["connection", "message", "ding", "signal", "report"]

#: The per-user budget each op draws on (ops not listed draw only on the connection's).
_OP_BUDGETS: Final[dict[str, Budget]] = {
    "msg.send": "message",
    "ding.send": "ding",
    "ding.redding": "ding",
    "ping": "signal",
    "typing": "signal",
    "presence.subscribe": "signal",
    "report": "report",
}
#: Families of ops that share a budget by their name's prefix.
_PREFIX_BUDGETS: Final[tuple[tuple[str, Budget], ...]] = (("live.", "signal"),)

#: Strikes refill at this rate (per second) whatever the configured bucket size.
FLOOD_REFILL_PER_SECOND: Final = 1.0


def budget_of(op: str) -> Budget | None:
    """The per-user budget of an op name, or None when only the connection's applies."""
    found = _OP_BUDGETS.get(op)
    if found is not None:
        return found
    for prefix, budget in _PREFIX_BUDGETS:
        if op.startswith(prefix):
            return budget
    return None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A frame over budget: which budget, and how long to wait."""

    budget: Budget
    retry_after: float
    #: True when this refusal used up the connection's strikes: close it with 4051.
    flood: bool


class Throttle:
    """Every budget of one server. ``message_limiter`` is shared with the context (the
    ``msg.send`` budget existed before the others)."""

    def __init__(self, config: Config, *, message_limiter: KeyedLimiter) -> None:
        self._connections = KeyedLimiter(config.request_rate_per_second, config.request_burst)
        self._user_frames = KeyedLimiter(config.request_rate_per_second, config.request_burst)
        self._users: dict[Budget, KeyedLimiter] = {
            "message": message_limiter,
            "ding": KeyedLimiter(config.ding_rate_per_second, config.ding_burst),
            "signal": KeyedLimiter(config.signal_rate_per_second, config.signal_burst),
            "report": KeyedLimiter(config.report_rate_per_second, config.report_burst),
        }
        self._strikes = KeyedLimiter(FLOOD_REFILL_PER_SECOND, config.flood_strikes)

    def admit_frame(self, conn_id: int, user_id: int | None, now: float) -> Refusal | None:
        """Charge one frame to the connection and, once authenticated, to its user
        (before decoding)."""
        wait = self._connections.take(conn_id, now)
        if wait == 0.0 and user_id is not None:
            wait = self._user_frames.take(user_id, now)
        if wait == 0.0:
            return None
        return self._refuse(conn_id, user_id, "connection", wait, now)

    def admit_op(self, conn_id: int, user_id: int | None, op: str, now: float) -> Refusal | None:
        """Charge a decoded op to its user's budget (none before authentication)."""
        budget = budget_of(op)
        if budget is None or user_id is None:
            return None
        wait = self._users[budget].take(user_id, now)
        return None if wait == 0.0 else self._refuse(conn_id, user_id, budget, wait, now)

    def _refuse(
        self, conn_id: int, user_id: int | None, budget: Budget, wait: float, now: float
    ) -> Refusal:
        # Strikes are the user's once known (user ids and connection ids are kept apart).
        key = -user_id if user_id is not None else conn_id
        flood = self._strikes.take(key, now) > 0.0
        # Rounded up to the millisecond: never a retry_after of 0.
        return Refusal(budget=budget, retry_after=math.ceil(wait * 1000) / 1000, flood=flood)

    def forget(self, conn_id: int) -> None:
        """Drop a closed connection's buckets (user budgets outlive connections)."""
        self._connections.drop(conn_id)
        self._strikes.drop(conn_id)
