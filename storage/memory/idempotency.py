"""Idempotency keys for the in-memory stores: what the first write with a key produced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from storage.errors import IdempotencyConflict
from storage.records import IdempotencyKey

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Recorded(Generic[T]):
    fingerprint: bytes
    result: T
    recorded_at: int


class IdempotencyLog(Generic[T]):
    """(sender, client id) -> the first write's result and fingerprint.

    Each store keeps its own log: a key lives in the database of the write it guards.
    """

    def __init__(self) -> None:
        self._recorded: dict[tuple[int, str], _Recorded[T]] = {}

    def lookup(self, key: IdempotencyKey | None) -> T | None:
        """The result recorded for ``key``, or None if it is new.

        ``IdempotencyConflict`` if the key was used for a write with another fingerprint.
        """
        if key is None:
            return None
        recorded = self._recorded.get((key.sender, key.client_id))
        if recorded is None:
            return None
        if recorded.fingerprint != key.fingerprint:
            raise IdempotencyConflict("idempotency key reused for a different request")
        return recorded.result

    def record(self, key: IdempotencyKey | None, result: T, *, now: int) -> None:
        if key is not None:
            self._recorded[(key.sender, key.client_id)] = _Recorded(key.fingerprint, result, now)

    def forget_results(self, results: set[T]) -> None:
        """Forget every key whose result is in ``results`` (its write was deleted)."""
        for key in [k for k, recorded in self._recorded.items() if recorded.result in results]:
            del self._recorded[key]

    def prune(self, *, older_than: int) -> int:
        stale = [k for k, recorded in self._recorded.items() if recorded.recorded_at < older_than]
        for k in stale:
            del self._recorded[k]
        return len(stale)
