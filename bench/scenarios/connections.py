"""``connections``: idle authenticated connections held, against the bare server's.

Cases (``--connections``, default 10,000, ``--tiny`` 20):

* ``bare``: the bare trio-websocket echo server; N connections opened and held.
* ``rivet``: N users (``rivet users bulk``), one connection each, each authenticated with
  ``hello`` and its token, then held idle. A connection counts once it is authenticated
  (attached to the hub, presence announced).

Both open their connections with ``CONCURRENCY`` handshakes in flight per load worker: all
10,000 at once would measure the kernel's SYN retries after the listen backlog overflows
(and, for Rivet, the handshake deadline closing connections that waited too long), not the
set-up rate; ``storm`` is the all-at-once case.

Figures: the set-up rate (connections per second from the go signal to the last one in),
the set-up latency of each (connect to authenticated), server CPU per connection, and the
server's RSS per held connection (its RSS with every connection open, after a settle,
minus its RSS before, divided by the connections).

Each side needs a file descriptor per connection: the harness lifts the soft limit to the
hard one (``ulimit -Hn``) for the server and the load workers; the report's ``fd_limit``
says what that was.
"""

from __future__ import annotations

import resource

from bench import patterns
from bench.context import CaseResult, Options, RunContext
from bench.rivet_server import rivet_spec, users_of
from bench.scenarios import Case, register
from bench.scenarios._rivet import bare_accept, connect_timeout

CONNECTIONS = (10_000, 20)
#: Handshakes in flight per worker, the same for both cases.
CONCURRENCY = 256


def _count(ctx: RunContext) -> int:
    return ctx.pick(ctx.options.connections, *CONNECTIONS)


def _fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _bare(ctx: RunContext) -> CaseResult:
    result = bare_accept(ctx, _count(ctx), "bare", concurrency=CONCURRENCY)
    result.figures["fd_limit"] = _fd_limit()
    return result


def _rivet(ctx: RunContext) -> CaseResult:
    n = _count(ctx)
    with ctx.server(rivet_spec("rivet-connections", users=n, connections=n)) as server:
        users = users_of(ctx, server, n)

        def extra(role: str, first: int, count: int) -> dict[str, object]:
            return {"tokens": [u.access_token for u in users[first : first + count]]}

        result = patterns.connect_storm(
            ctx,
            server,
            n,
            ctx.workers(n),
            concurrency=CONCURRENCY,
            workload="bench.rivet_workloads:idle",
            label="rivet",
            extra=extra,
            connect_timeout=connect_timeout(n),
        )
    result.figures["fd_limit"] = _fd_limit()
    return result


@register("connections", "idle authenticated Rivet connections held, against the bare server")
def connection_cases(options: Options) -> list[Case]:
    return [
        Case("bare", "N connections opened at once to the bare echo server, held", _bare),
        Case("rivet", "N users connect and authenticate at once, then stay idle", _rivet, "bare"),
    ]
