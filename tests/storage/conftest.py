"""Every store backend runs the same conformance suite (house habit 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.stores import Stores

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "memory":
        from storage.memory import open_memory_stores

        async with open_memory_stores() as opened:
            yield opened
    else:
        from storage.sqlite import open_sqlite_stores

        async with open_sqlite_stores(tmp_path / "data") as opened:
            yield opened
