"""The in-memory key store (reference implementation of ``storage.keys``)."""

from __future__ import annotations

from collections import Counter

from msgspec.structs import replace

from storage.errors import AlreadyExists
from storage.keys import KeysDestroyed, OwnerKeys, OwnerKind, WrappedKey, owner_kind


class MemoryKeyStore:
    def __init__(self) -> None:
        self._keys: dict[str, dict[int, WrappedKey]] = {}
        self._destroyed: dict[str, int] = {}

    async def load(self, owner: str) -> OwnerKeys:
        owner_kind(owner)
        return self._owner_keys(owner)

    def _owner_keys(self, owner: str) -> OwnerKeys:
        keys = self._keys.get(owner, {})
        return OwnerKeys(
            owner=owner,
            keys=tuple(keys[key_id] for key_id in sorted(keys)),
            destroyed_at=self._destroyed.get(owner),
        )

    async def add_key(
        self, owner: str, *, key_id: int, wrapped: bytes, master_id: str, reserved: int, now: int
    ) -> WrappedKey:
        owner_kind(owner)
        if owner in self._destroyed:
            raise KeysDestroyed(owner)
        keys = self._keys.setdefault(owner, {})
        if key_id != max(keys, default=0) + 1:
            raise AlreadyExists(f"{owner}: key {key_id} is taken or out of turn")
        key = WrappedKey(
            owner=owner,
            key_id=key_id,
            wrapped=wrapped,
            master_id=master_id,
            created_at=now,
            reserved=reserved,
        )
        keys[key_id] = key
        return key

    async def reserve(
        self, owner: str, key_id: int, *, count: int, limit: int
    ) -> tuple[int, int] | None:
        keys = self._keys.get(owner, {})
        key = keys.get(key_id)
        if key is None or key_id != max(keys) or key.reserved >= limit:
            return None
        end = min(key.reserved + max(count, 0), limit)
        keys[key_id] = replace(key, reserved=end)
        return key.reserved, end

    async def destroy(self, owner: str, *, now: int) -> int:
        owner_kind(owner)
        gone = len(self._keys.pop(owner, {}))
        self._destroyed.setdefault(owner, now)
        return gone

    async def scan(self, kind: OwnerKind, *, after: str, limit: int) -> list[OwnerKeys]:
        owners = {o for o in (*self._keys, *self._destroyed) if owner_kind(o) == kind}
        return [self._owner_keys(o) for o in sorted(o for o in owners if o > after)[:limit]]

    async def rewrap(
        self, owner: str, key_id: int, *, expect_master: str, wrapped: bytes, master_id: str
    ) -> bool:
        key = self._keys.get(owner, {}).get(key_id)
        if key is None or key.master_id != expect_master:
            return False
        self._keys[owner][key_id] = replace(key, wrapped=wrapped, master_id=master_id)
        return True

    async def master_ids(self) -> dict[str, int]:
        return dict(Counter(k.master_id for keys in self._keys.values() for k in keys.values()))
