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

from server import encryption
from server.account_deletion import AccountEraser
from server.auth import ServerKeys
from server.bus import Disconnect, MemoryBus
from server.clock import Clock, SystemClock
from server.config import Config
from server.context import Context, bus_publisher, publish_event
from server.credentials import Credentials
from server.ding.runtime import DingRuntime
from server.dissolution import Dissolver, enterprise_account_ender
from server.domains import conversation_store
from server.enterprise import EnterpriseIndex
from server.gateway import Gateway
from server.hub import Hub
from server.last_seen import LastSeen
from server.live import LiveRuntime
from server.maintenance import prune_idempotency_keys
from server.membership import MemberCache
from server.moderation import ModerationWatcher
from server.notify.factory import notifier_from_config
from server.notify.interface import Notifier
from server.ops_http import serve_ops_http, server_routes
from server.ordering import SeqOrderedPublisher
from server.org_feed import OrgFeeds
from server.org_index import OrgIndex
from server.org_membership import end_other_memberships
from server.outbox import OutboxRelay
from server.push import PushQueue
from server.ratelimit import KeyedLimiter
from server.receipts import ReceiptCoalescer
from server.router import Router
from server.services import groups as groups_service
from server.services import live as live_service
from server.services.render import entry_event
from server.tls import server_context
from server.transport import listener
from storage.records import Entry
from storage.stores import Stores

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """What ``serve`` hands its caller through ``task_status``."""

    port: int
    ctx: Context
    gateway: Gateway
    router: Router
    #: The port of /healthz and /metrics, when the operations endpoint is on.
    metrics_port: int | None = None
    _stop: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        scheme = "wss" if self.ctx.config.tls_cert is not None else "ws"
        return f"{scheme}://{self.ctx.config.host}:{self.port}/"

    def shutdown(self) -> None:
        """Begin a graceful shutdown; ``serve`` returns when it is complete."""
        self._stop.set()


@asynccontextmanager
async def open_stores(config: Config, *, seal: bool = True) -> AsyncIterator[Stores]:
    """The configured stores; with ``seal`` (always, but for ``rivet keys rewrap``) content
    is sealed at rest under the master key (A3, ``server.encryption``)."""
    if config.store == "memory":
        from storage.memory import open_memory_stores

        async with open_memory_stores() as stores:
            yield await encryption.sealed(config, stores) if seal else stores
    else:
        from storage.sqlite import open_sqlite_stores

        async with open_sqlite_stores(
            config.data_dir,
            synchronous=config.sqlite_synchronous,
            max_page_count=config.sqlite_max_page_count,
        ) as stores:
            yield await encryption.sealed(config, stores) if seal else stores


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
    live = LiveRuntime.from_config(config, stores, clock=clock)
    hub.on_detach(live.connection_closed)
    org_feeds = OrgFeeds()
    members = MemberCache(partial(conversation_store, stores))

    async def publish_recall(entry: Entry) -> None:
        publish_event(bus, await members.seeing(entry.conv_id, entry.seq), entry_event(entry))

    def disconnect(user_id: int, code: int, reason: str) -> None:
        bus.publish([user_id], Disconnect(code=code, reason=reason))

    enterprise = EnterpriseIndex(stores.orgs)
    org_index = OrgIndex(stores.orgs)

    async def leave_other_orgs(user_id: int, dissolved_org: int) -> None:
        await end_other_memberships(
            stores, org_index, org_feeds, user_id, ending_org=dissolved_org, now=clock.now_ms()
        )

    async def leave_conversation(conv_id: str, user_id: int) -> None:
        # ``ctx`` is the context returned below: the erasure job runs only once it exists.
        await groups_service.depart(ctx, conv_id, user_id)

    eraser = AccountEraser(
        stores,
        clock,
        publish_recall=publish_recall,
        disconnect=disconnect,
        publish=partial(publish_event, bus),
        leave_conversation=leave_conversation,
    )

    ctx = Context(
        config=config,
        clock=clock,
        stores=stores,
        bus=bus,
        hub=hub,
        notifier=notifier,
        credentials=credentials,
        members=members,
        send_limiter=KeyedLimiter(config.send_rate_per_second, config.send_burst),
        receipts=ReceiptCoalescer(
            partial(conversation_store, stores),
            partial(publish_event, bus),
            interval=config.receipt_flush_seconds,
        ),
        pushes=PushQueue(personal=stores.personal, hub=hub, notifier=notifier),
        last_seen=LastSeen(stores.personal),
        ordered=SeqOrderedPublisher(bus_publisher(bus)),
        live=live,
        ding=DingRuntime.from_config(
            config, stores, clock=clock, notifier=notifier, bus=bus, is_online=hub.is_online
        ),
        org_index=org_index,
        enterprise=enterprise,
        dissolver=Dissolver(
            stores.orgs,
            on_dissolved=encryption.org_keys_destroyer(stores.keys, clock),
            # O4 with P5: the organisation's enterprise accounts end with it.
            end_account=enterprise_account_ender(eraser, enterprise, leave_other_orgs),
            # D2: its own conversations (o:<org>:...) go with it.
            conversations=stores.org_conversations,
            lives=stores.org_live,
            # D2/G2: its own DINGs and its DING package go with it too.
            dings=stores.org_ding,
            chunk=config.dissolution_chunk_rows,
            pause_seconds=config.dissolution_pause_seconds,
        ),
        eraser=eraser,
        org_feeds=org_feeds,
        outbox=OutboxRelay(
            cross=stores.cross,
            org_conversations=stores.org_conversations,
            orgs=stores.orgs,
            consent=stores.consent,
            feeds=org_feeds,
            ref_key=credentials.ref_key,
            # D4 for DINGs (issue #4): both DING stores record copy effects too.
            dings={"cross": stores.ding, "org": stores.org_ding},
        ),
    )
    return ctx


async def serve(
    config: Config,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    keys: ServerKeys | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    clock = clock or SystemClock()
    if config.store == "sqlite" or notifier is None:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    notifier = notifier or notifier_from_config(config, clock)
    # Tests may bring their own keys (two servers that must sign and key alike).
    credentials = Credentials(keys, clock, config) if keys else Credentials.open(config, clock)
    tls = None
    if config.tls_cert is not None and config.tls_key is not None:
        tls = server_context(config.tls_cert, config.tls_key)
    async with open_stores(config) as stores:
        ctx = build_context(config, stores, clock=clock, notifier=notifier, credentials=credentials)
        router = Router(ctx)
        gateway = Gateway(ctx, router)
        async with trio.open_nursery() as background:
            await background.start(ctx.receipts.run)
            await background.start(ctx.last_seen.run)
            await background.start(ctx.pushes.run)
            await background.start(ctx.outbox.run)
            await background.start(ctx.dissolver.run)
            await background.start(ctx.eraser.run)
            await background.start(ctx.ordered.run)
            await background.start(prune_idempotency_keys, ctx.stores, clock)
            await background.start(ctx.ding.run)
            await background.start(live_service.run, ctx)
            await background.start(ModerationWatcher(ctx).run)
            # The heartbeat of every connection, and writer tasks while frames wait.
            await background.start(gateway.run)
            metrics_port = None
            if config.metrics_port is not None:
                metrics_port = await background.start(
                    serve_ops_http,
                    config.metrics_host,
                    config.metrics_port,
                    server_routes(gateway, ctx.ding.gauges, ctx.stores.problems),
                )
            async with trio.open_nursery() as handlers:
                async with trio.open_nursery() as listening:
                    # One task per connection, in ``handlers`` (the gateway's
                    # serve_connection: the upgrade and TLS within the handshake deadline).
                    port = await listening.start(
                        partial(
                            listener.serve,
                            gateway.serve_connection,
                            host=config.host,
                            port=config.port,
                            tls=tls,
                            handler_nursery=handlers,
                        )
                    )
                    running = RunningServer(
                        port=port,
                        ctx=ctx,
                        gateway=gateway,
                        router=router,
                        metrics_port=metrics_port,
                    )
                    log.info("listening", extra={"url": running.url})
                    task_status.started(running)
                    await running._stop.wait()
                    listening.cancel_scope.cancel()
                await gateway.drain()
                # Accepted connections are closed (or closing, shielded). What is left in this
                # nursery are TCP connections still in their HTTP upgrade: drop them now
                # rather than wait out their handshake deadline.
                handlers.cancel_scope.cancel()
            # Flush what is coalesced before stopping: read counts still pending go out.
            await ctx.receipts.flush()
            await ctx.last_seen.flush()
            # Streams whose hosts were cut off by the shutdown resume from their records.
            await ctx.live.checkpoint()
            background.cancel_scope.cancel()
    log.info("stopped")
