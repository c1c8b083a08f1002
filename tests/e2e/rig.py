"""Shared end-to-end scaffolding: the real server on a loopback port with a ``ManualClock``
(``Rig``), a fixture factory parametrized over the memory and SQLite stores, and the small
helpers the tests share (``uid``, ``next_of``, ``refused``)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from client import ClientState, RivetClient
from client.connection import RivetError
from protocol import requests as rq
from server.app import RunningServer, serve
from server.clock import ManualClock
from server.notify.memory import MemoryNotifier
from tests.e2e.conftest import Harness, make_config

E = TypeVar("E")

STORES = ["memory", "sqlite"]

# One counter for every file, so no two users of a test session share a phone number.
_phones = itertools.count(1)


def new_phone(prefix: str) -> str:
    """A phone number never handed out before in this test session: ``prefix`` + 7 digits."""
    return f"{prefix}{next(_phones):07d}"


@dataclass
class Rig:
    """The real server with a clock the test moves; users get numbers under ``phone_prefix``."""

    server: RunningServer
    notifier: MemoryNotifier
    clock: ManualClock
    phone_prefix: str

    @property
    def url(self) -> str:
        return self.server.url

    async def login(self, phone: str, name: str, device: str = "phone") -> ClientState:
        await RivetClient.request_code(self.url, phone=phone)
        code = self.notifier.last_code(phone)
        assert code is not None
        return await RivetClient.login(
            self.url, phone=phone, code=code, device_name=device, display_name=name or None
        )

    async def new_user(self, name: str) -> tuple[str, ClientState]:
        phone = new_phone(self.phone_prefix)
        return phone, await self.login(phone, name)

    async def new_device(self, phone: str, device: str) -> ClientState:
        """Another device of the user: past the one-code-per-30-s throttle (C2)."""
        self.clock.advance(31)
        return await self.login(phone, "", device)


@asynccontextmanager
async def open_server(
    nursery: trio.Nursery,
    tmp_path: Path,
    store: str,
    clock: ManualClock | None,
    overrides: Mapping[str, object],
) -> AsyncIterator[tuple[RunningServer, MemoryNotifier]]:
    """The real server on ``store`` with config ``overrides`` (and ``clock``, else the system
    clock); shut down on exit."""
    notifier = MemoryNotifier(clock=clock)
    config = make_config(tmp_path, store=store, **overrides)
    running: RunningServer = await nursery.start(
        partial(serve, config, clock=clock, notifier=notifier)
    )
    try:
        yield running, notifier
    finally:
        running.shutdown()


def rig_fixture(phone_prefix: str, *, rig_type: type[Rig] = Rig, **overrides: object) -> Any:
    """A ``rig`` fixture over both stores: a ``rig_type`` with a fresh ``ManualClock``, its
    users numbered under ``phone_prefix``, the server's config changed by ``overrides``.
    Assign it to the fixture's name in the test module: ``rig = rig_fixture("+1999", ...)``."""

    @pytest.fixture(params=STORES)
    async def rig(
        request: pytest.FixtureRequest, nursery: trio.Nursery, tmp_path: Path
    ) -> AsyncIterator[Rig]:
        clock = ManualClock()
        async with open_server(nursery, tmp_path, request.param, clock, overrides) as served:
            running, notifier = served
            yield rig_type(running, notifier, clock, phone_prefix)

    return rig


def harness_fixture(**overrides: object) -> Any:
    """A fixture like the ``harness`` of ``conftest`` (system clock, both stores), with the
    server's config changed by ``overrides``; assign it to the fixture's name."""

    @pytest.fixture(params=STORES)
    async def harness(
        request: pytest.FixtureRequest, nursery: trio.Nursery, tmp_path: Path
    ) -> AsyncIterator[Harness]:
        async with open_server(nursery, tmp_path, request.param, None, overrides) as served:
            yield Harness(*served)

    return harness


def uid(state: ClientState) -> int:
    assert state.user_id is not None
    return state.user_id


async def next_of(
    client: RivetClient, kind: type[E], match: Callable[[E], bool] = lambda _: True
) -> E:
    """The next live event of ``kind`` that ``match``es, skipping others (bounded)."""
    with trio.fail_after(5):
        while True:
            event = await client.next_event()
            if isinstance(event, kind) and match(event):
                return event


async def refused(client: RivetClient, request: rq.Request) -> int:
    """Send ``request``, which must be refused; the error code."""
    with pytest.raises(RivetError) as caught:
        await client.request(request)
    return caught.value.code
