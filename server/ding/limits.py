"""C2: the per-recipient rate limit on DINGs (token buckets, per process).

The per-sender limit is the router's ``ding`` budget (``server.throttle``: every
``ding.send`` and ``ding.redding`` of a user, all connections together). This one protects
the people DINGed: each recipient a DING or re-DING reaches costs one token of that
recipient's bucket, whoever sends it, so nobody can be flooded with DINGs by many senders.
A DING is admitted whole or not at all: if any recipient's bucket is short, nothing is taken
and the caller is told how long to wait for the slowest one.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.ratelimit import TokenBucket


class RecipientLimits:
    def __init__(self, *, per_minute: float, burst: int, max_keys: int = 100_000) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("the recipient rate must be positive and the burst at least 1")
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_keys = max_keys
        self._buckets: dict[int, TokenBucket] = {}

    def admit(self, recipients: Iterable[int], now: float) -> float:
        """Take a token from each recipient's bucket and return 0.0, or take nothing and
        return the seconds until all of them have one (``now``: trio's clock)."""
        users = list(dict.fromkeys(recipients))
        wait = max((self._wait(user, now) for user in users), default=0.0)
        if wait > 0.0:
            return wait
        for user in users:
            self._take(user, now)
        return 0.0

    def _wait(self, user: int, now: float) -> float:
        bucket = self._buckets.get(user)
        if bucket is None:
            return 0.0
        tokens = min(self._burst, bucket.tokens + max(0.0, now - bucket.updated) * self._rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def _take(self, user: int, now: float) -> None:
        bucket = self._buckets.get(user)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget_full(now)
            bucket = self._buckets[user] = TokenBucket.full(self._rate, self._burst, now)
        bucket.take(now)

    def _forget_full(self, now: float) -> None:
        for user, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self._rate >= self._burst:
                del self._buckets[user]
