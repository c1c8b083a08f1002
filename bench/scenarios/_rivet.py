"""What the Rivet scenarios share: how big a case is, and the bare baselines they run
beside Rivet in the same run (so every target is a ratio measured on the same machine in
the same minutes)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from bench import patterns
from bench.context import CaseResult, RunContext
from bench.scenarios.baseline import TRANSPORT_ECHO, server_spec

DURATION = 5.0
WARMUP = 1.0
PAYLOAD_SIZE = 128


def connect_timeout(connections: int) -> float:
    """Seconds to open ``connections`` connections: thousands at once overflow the listen
    backlog, and the kernel retries the SYNs it dropped after 1, 3, 7... seconds."""
    return 30.0 + connections / 100


def load(
    ctx: RunContext,
    *,
    connections: int,
    tiny_messages: int,
    window: int,
    rate: float | None = None,
    workers_for: int | None = None,
) -> patterns.Load:
    """A ``Load`` from the options, with the case's own defaults (``rate`` None: closed loop)."""
    o = ctx.options
    messages = o.messages
    duration = o.duration
    if messages is None and duration is None:
        if o.tiny:
            messages = tiny_messages
        else:
            duration = DURATION
    return patterns.Load(
        connections=connections,
        messages=messages,
        duration=duration,
        warmup=0.0 if duration is None else ctx.pick(o.warmup, WARMUP, 0.0),
        rate=rate,
        window=ctx.pick(o.window, window, window),
        payload_size=ctx.pick(o.payload_size, PAYLOAD_SIZE, PAYLOAD_SIZE),
        workers=ctx.workers(workers_for or connections),
    )


def bare_echo(ctx: RunContext, load: patterns.Load, label: str) -> CaseResult:
    with ctx.server(server_spec("echo_server", False)) as server:
        return patterns.request_reply(ctx, server, load, label=label)


def transport_echo(ctx: RunContext, load: patterns.Load, label: str) -> CaseResult:
    """The echo over Rivet's own transport (no features): that transport's ceiling."""
    with ctx.server(TRANSPORT_ECHO) as server:
        return patterns.request_reply(ctx, server, load, label=label)


def bare_broadcast(ctx: RunContext, load: patterns.Load, fast: bool, label: str) -> CaseResult:
    with ctx.server(server_spec("broadcast_server", fast)) as server:
        return patterns.fan_out(
            ctx, server, load, label=label, connect_timeout=connect_timeout(load.connections)
        )


def bare_accept(
    ctx: RunContext, connections: int, label: str, concurrency: int | None = None
) -> CaseResult:
    """The bare echo server accepting ``connections`` fresh connections, opened at once
    (or ``concurrency`` handshakes in flight per worker)."""
    with ctx.server(server_spec("echo_server", False)) as server:
        return patterns.connect_storm(
            ctx,
            server,
            connections,
            ctx.workers(connections),
            concurrency=concurrency,
            label=label,
            connect_timeout=connect_timeout(connections),
        )


@contextlib.contextmanager
def removed_unless_failed(workdir: Path, what: str) -> Iterator[None]:
    """Remove ``workdir`` when the block succeeds; when it fails, keep it and say where:
    its server data and log are what shows why (scenarios that restart their server)."""
    try:
        yield
    except BaseException:
        print(f"warning: {what}'s server data and log are kept in {workdir}")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
