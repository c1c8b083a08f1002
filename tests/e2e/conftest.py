"""End-to-end fixtures: the real server on a loopback port, driven by the client SDK."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import trio

from client import ClientState, RivetClient
from server.app import RunningServer, serve
from server.config import Config
from server.notify.memory import MemoryNotifier

_phones = itertools.count(1)


@dataclass
class Harness:
    server: RunningServer
    notifier: MemoryNotifier

    @property
    def url(self) -> str:
        return self.server.url

    async def new_user(self, name: str = "") -> ClientState:
        """A user created through the real login flow (request a code, read it from the
        notifier, verify it)."""
        phone = f"+1555{next(_phones):07d}"
        await RivetClient.request_code(self.url, phone=phone)
        code = self.notifier.last_code(phone)
        assert code is not None
        return await RivetClient.login(self.url, phone=phone, code=code, display_name=name or None)


def make_config(tmp_path: Path, **overrides: object) -> Config:
    base = Config(host="127.0.0.1", port=0, data_dir=tmp_path / "data", store="memory")
    return base.with_overrides(**overrides)


@pytest.fixture(params=["memory", "sqlite"])
async def harness(
    request: pytest.FixtureRequest, nursery: trio.Nursery, tmp_path: Path
) -> AsyncIterator[Harness]:
    notifier = MemoryNotifier()
    config = make_config(tmp_path, store=request.param, receipt_flush_seconds=0.05)
    running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
    yield Harness(running, notifier)
    running.shutdown()
