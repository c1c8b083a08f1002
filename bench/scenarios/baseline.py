"""``baseline``: bare trio-websocket servers under the same load generator as Rivet.

Cases (``--case`` picks some):

* ``echo-plain`` / ``echo-fast``: ``bench.baseline.echo_server`` with ``send_message``, or
  with ``--fast-write``; closed loop, ``window`` messages in flight per connection.
* ``echo-transport``: ``bench.baseline.transport_echo``, the same echo over the transport
  Rivet's server runs on (``server.transport``: wsproto driven from the connection's one
  task, frames written straight to the socket): that transport's ceiling.
* ``broadcast-plain`` / ``broadcast-fast``: ``bench.baseline.broadcast_server``; one
  publisher, ``connections`` subscribers; units are deliveries.
* ``connections``: ``connections`` idle connections to the plain echo server, opened all at
  once: time to accept them all, set-up rate, server RSS per connection.

The ``-fast`` cases carry their ``-plain`` twin as reference, so the report shows what the
fast write buys at the transport's own level.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench import patterns
from bench.context import CaseResult, Options, RunContext
from bench.harness import ServerSpec
from bench.scenarios import Case, CaseFn, register

_ROOT = str(Path(__file__).resolve().parents[2])

# (normal, tiny) defaults
ECHO_CONNECTIONS = (32, 4)
ECHO_MESSAGES_TINY = 50
BROADCAST_SUBSCRIBERS = (100, 8)
BROADCAST_MESSAGES_TINY = 40
STORM_CONNECTIONS = (1000, 50)
DURATION = 5.0
WARMUP = 1.0
PAYLOAD_SIZE = 128


def server_spec(module: str, fast_write: bool, *, name: str | None = None) -> ServerSpec:
    """A bare server started as ``python -m bench.baseline.MODULE``."""
    argv = ["{python}", "-m", f"bench.baseline.{module}", "--host", "{host}", "--port", "{port}"]
    if fast_write:
        argv.append("--fast-write")
    pythonpath = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)
    if name is None:
        name = f"{module.removesuffix('_server')}-{'fast' if fast_write else 'plain'}"
    return ServerSpec(name, tuple(argv), env={"PYTHONPATH": pythonpath})


#: The echo over Rivet's own transport (``bench.baseline.transport_echo``).
TRANSPORT_ECHO = server_spec("transport_echo", False, name="echo-transport")


def _load(
    ctx: RunContext, connections: tuple[int, int], tiny_messages: int, window: int
) -> patterns.Load:
    o = ctx.options
    conns = ctx.pick(o.connections, *connections)
    messages = o.messages
    duration = o.duration
    if messages is None and duration is None:
        if o.tiny:
            messages = tiny_messages
        else:
            duration = DURATION
    return patterns.Load(
        connections=conns,
        messages=messages,
        duration=duration,
        warmup=0.0 if duration is None else ctx.pick(o.warmup, WARMUP, 0.0),
        rate=o.rate,
        window=ctx.pick(o.window, window, window),
        payload_size=ctx.pick(o.payload_size, PAYLOAD_SIZE, PAYLOAD_SIZE),
        workers=ctx.workers(conns),
    )


def _echo(fast_write: bool) -> CaseFn:
    def run(ctx: RunContext) -> CaseResult:
        load = _load(ctx, ECHO_CONNECTIONS, ECHO_MESSAGES_TINY, window=1)
        with ctx.server(server_spec("echo_server", fast_write)) as server:
            return patterns.request_reply(ctx, server, load, label=_label(fast_write, "echo"))

    return run


def _transport_echo(ctx: RunContext) -> CaseResult:
    load = _load(ctx, ECHO_CONNECTIONS, ECHO_MESSAGES_TINY, window=1)
    with ctx.server(TRANSPORT_ECHO) as server:
        return patterns.request_reply(ctx, server, load, label="echo-transport")


def _broadcast(fast_write: bool) -> CaseFn:
    def run(ctx: RunContext) -> CaseResult:
        load = _load(ctx, BROADCAST_SUBSCRIBERS, BROADCAST_MESSAGES_TINY, window=4)
        with ctx.server(server_spec("broadcast_server", fast_write)) as server:
            return patterns.fan_out(ctx, server, load, label=_label(fast_write, "broadcast"))

    return run


def _connections(ctx: RunContext) -> CaseResult:
    n = ctx.pick(ctx.options.connections, *STORM_CONNECTIONS)
    with ctx.server(server_spec("echo_server", False)) as server:
        return patterns.connect_storm(ctx, server, n, ctx.workers(n), label="connections")


def _label(fast_write: bool, what: str) -> str:
    return f"{what}-{'fast' if fast_write else 'plain'}"


@register("baseline", "bare trio-websocket echo, broadcast and connection set-up")
def baseline_cases(options: Options) -> list[Case]:
    return [
        Case("echo-plain", "echo, send_message", _echo(False)),
        Case("echo-fast", "echo, pre-built frame written to the socket", _echo(True), "echo-plain"),
        Case(
            "echo-transport",
            "echo over Rivet's own transport (server.transport), no features",
            _transport_echo,
            "echo-plain",
        ),
        Case("broadcast-plain", "1 publisher to N subscribers, send_message", _broadcast(False)),
        Case(
            "broadcast-fast",
            "1 publisher to N subscribers, one frame written to every socket",
            _broadcast(True),
            "broadcast-plain",
        ),
        Case("connections", "N connections opened at once to the plain echo server", _connections),
    ]
