"""``serve()``: the root nursery that wires everything together.

Lifetimes, outermost first: the stores (closing them drains their write queues), the
background services (receipt coalescing, offline pushes, upkeep), the connection handlers,
and the listener. Shutdown stops the listener first, then drains the connections (in-flight
requests finish, sockets close with 1001), then stops the background services, then
closes the stores. Nothing outlives ``serve()``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio
from trio_websocket import serve_websocket

from protocol import limits
from server.bus import MemoryBus
from server.clock import Clock, SystemClock
from server.config import Config
from server.context import Context, bus_publisher, publish_event
from server.credentials import Credentials
from server.gateway import Gateway
from server.hub import Hub
from server.maintenance import prune_idempotency_keys
from server.membership import MemberCache
from server.notify.interface import Notifier
from server.notify.outbox import OutboxNotifier
from server.ordering import SeqOrderedPublisher
from server.push import PushQueue
from server.ratelimit import KeyedLimiter
from server.receipts import ReceiptCoalescer
from server.router import Router
from storage.stores import Stores

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """What ``serve`` hands its caller through ``task_status``."""

    port: int
    ctx: Context
    gateway: Gateway
    router: Router
    _stop: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"ws://{self.ctx.config.host}:{self.port}/"

    def shutdown(self) -> None:
        """Begin a graceful shutdown; ``serve`` returns when it is complete."""
        self._stop.set()


@asynccontextmanager
async def open_stores(config: Config) -> AsyncIterator[Stores]:
    if config.store == "memory":
        from storage.memory import open_memory_stores

        async with open_memory_stores() as stores:
            yield stores
    else:
        from storage.sqlite import open_sqlite_stores

        async with open_sqlite_stores(
            config.data_dir, synchronous=config.sqlite_synchronous
        ) as stores:
            yield stores


def build_context(
    config: Config,
    stores: Stores,
    *,
    clock: Clock,
    notifier: Notifier,
    credentials: Credentials,
) -> Context:
    """Everything the router hands the services, wired for one process (in-process bus)."""
    bus = MemoryBus()
    hub = Hub(bus)
    return Context(
        config=config,
        clock=clock,
        stores=stores,
        bus=bus,
        hub=hub,
        notifier=notifier,
        credentials=credentials,
        members=MemberCache(stores.cross),
        send_limiter=KeyedLimiter(config.send_rate_per_second, config.send_burst),
        receipts=ReceiptCoalescer(
            stores.cross, partial(publish_event, bus), interval=config.receipt_flush_seconds
        ),
        pushes=PushQueue(personal=stores.personal, hub=hub, notifier=notifier),
        ordered=SeqOrderedPublisher(bus_publisher(bus)),
    )


async def serve(
    config: Config,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    clock = clock or SystemClock()
    if config.store == "sqlite" or notifier is None:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    notifier = notifier or OutboxNotifier(config.data_dir, clock=clock)
    credentials = Credentials.open(config, clock)
    async with open_stores(config) as stores:
        ctx = build_context(config, stores, clock=clock, notifier=notifier, credentials=credentials)
        router = Router(ctx)
        gateway = Gateway(ctx, router)
        async with trio.open_nursery() as background:
            await background.start(ctx.receipts.run)
            await background.start(ctx.pushes.run)
            await background.start(ctx.ordered.run)
            await background.start(prune_idempotency_keys, ctx.stores, clock)
            async with trio.open_nursery() as handlers:
                async with trio.open_nursery() as listening:
                    ws_server = await listening.start(
                        partial(
                            serve_websocket,
                            gateway.handle,
                            config.host,
                            config.port,
                            None,
                            handler_nursery=handlers,
                            max_message_size=limits.MAX_FRAME_BYTES,
                        )
                    )
                    running = RunningServer(
                        port=ws_server.port, ctx=ctx, gateway=gateway, router=router
                    )
                    log.info("listening", extra={"url": running.url})
                    task_status.started(running)
                    await running._stop.wait()
                    listening.cancel_scope.cancel()
                await gateway.drain()
            # Flush what is coalesced before stopping: read counts still pending go out.
            await ctx.receipts.flush()
            background.cancel_scope.cancel()
    log.info("stopped")
