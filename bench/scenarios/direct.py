"""``direct``: pairs of users chatting 1:1, durable, against the bare echo in the same run.

Cases (``--case`` picks some; ``--connections`` counts connections, two per pair):

* ``echo-plain``: the bare trio-websocket echo, same connections and window: the reference.
* ``echo-transport``: the same echo over Rivet's own transport (``server.transport``), no
  features: how far Rivet is from the transport it runs on (its ratio is to ``echo-plain``).
* ``rivet``: ``connections / 2`` pairs, each connection sending ``msg.send`` into its pair's
  single chat with ``window`` messages not yet acknowledged (closed loop, as fast as the
  server goes). Acks come only after the commit (SQLite, ``synchronous=FULL``); the unit is
  a message delivered to the peer; latency is send to delivery; every message must be
  acknowledged once and delivered once (``unacked``, ``ack_duplicated`` count the acks).
* ``relay`` / ``relay-durable``: Rivet's frames with none of its features
  (``bench.baseline.relay``): the same pairs and workload, each ``msg.send`` validated,
  acked and relayed to both users' connections (one receive, three sends, as Rivet);
  ``relay-durable`` also stores each message as one row through Rivet's SQLite writer
  before the ack. The floor of ``rivet`` on this stack: what no feature work can go below;
  ``relay-durable-half`` is that floor at ``rivet-half``'s rate.
* ``echo-plain-half`` / ``rivet-half``: both open loop at half of Rivet's maximum rate,
  ``rivet``'s throughput in the same repetition (or ``--rate``): the latency target is
  Rivet's p99 there against the bare echo's p99 at the same rate.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench import patterns
from bench.context import CaseResult, Options, RunContext
from bench.harness import ServerSpec
from bench.rivet_server import pythonpath, rivet_spec, template_for, users_of
from bench.scenarios import Case, CaseFn, register
from bench.scenarios._rivet import bare_echo, load, transport_echo

CONNECTIONS = (32, 4)  # (normal, tiny): two per pair
WINDOW = 4
TINY_MESSAGES = 20
#: Rivet's maximum rate by repetition, measured by the ``rivet`` case of this process.
_max_rate: dict[int, float] = {}
FALLBACK_RATE = 1000.0


def _connections(ctx: RunContext) -> int:
    n = ctx.pick(ctx.options.connections, *CONNECTIONS)
    return max(2, n - n % 2)


def _half_rate(ctx: RunContext) -> float:
    if ctx.options.rate is not None:
        return ctx.options.rate
    measured = _max_rate.get(ctx.repetition) or next(reversed(_max_rate.values()), None)
    return max((measured or FALLBACK_RATE) / 2, 1.0)


def _echo(half: bool) -> CaseFn:
    def run(ctx: RunContext) -> CaseResult:
        rate = _half_rate(ctx) if half else None
        n = _connections(ctx)
        result = bare_echo(
            ctx,
            load(ctx, connections=n, tiny_messages=TINY_MESSAGES, window=WINDOW, rate=rate),
            "echo-half" if half else "echo",
        )
        result.figures["offered_rate"] = rate
        return result

    return run


def _transport_echo(ctx: RunContext) -> CaseResult:
    n = _connections(ctx)
    shape = load(ctx, connections=n, tiny_messages=TINY_MESSAGES, window=WINDOW, rate=None)
    return transport_echo(ctx, shape, "echo-transport")


def _relay_spec(users: int, durable: bool) -> ServerSpec:
    """``bench.baseline.relay`` with the run's users (and its table, ``durable``)."""
    argv = ["{python}", "-m", "bench.baseline.relay", "--host", "{host}", "--port", "{port}"]
    argv += ["--users", "{data_dir}/users.jsonl"]
    if durable:
        argv += ["--durable", "{data_dir}"]
    listing = template_for(users) / "users.jsonl"

    def prepare(data_dir: Path) -> None:
        shutil.copy(listing, data_dir / "users.jsonl")

    return ServerSpec(
        "relay-durable" if durable else "relay",
        tuple(argv),
        env={"PYTHONPATH": pythonpath()},
        prepare=prepare,
        ready_text="relay (",
    )


def _rivet(half: bool, relay: str | None = None) -> CaseFn:
    """The pairs against Rivet, or against ``bench.baseline.relay`` (``relay``: its case
    name)."""

    def run(ctx: RunContext) -> CaseResult:
        rate = _half_rate(ctx) if half else None
        n = _connections(ctx)
        pairs = n // 2
        # ``Load.connections`` counts pairs here: the workload opens two connections each.
        shape = load(
            ctx,
            connections=pairs,
            tiny_messages=TINY_MESSAGES,
            window=WINDOW,
            rate=rate,
        )
        if relay is None:
            spec = rivet_spec("rivet-direct", users=n)
        elif ctx.options.url is not None:
            raise ValueError(f"{relay} starts its own server: leave out --url")
        else:
            spec = _relay_spec(n, durable=relay == "relay-durable")
        with ctx.server(spec) as server:
            users = users_of(ctx, server, n)

            def extra(role: str, first: int, count: int) -> dict[str, object]:
                return {
                    "pairs": [
                        [
                            users[2 * k].access_token,
                            users[2 * k].user_id,
                            users[2 * k + 1].access_token,
                            users[2 * k + 1].user_id,
                        ]
                        for k in range(first, first + count)
                    ]
                }

            result = patterns.request_reply(
                ctx,
                server,
                shape,
                workload="bench.rivet_workloads:direct",
                label=relay or ("rivet-half" if half else "rivet"),
                extra=extra,
            )
        result.figures["connections"] = n
        result.figures["pairs"] = pairs
        result.figures["offered_rate"] = rate
        c = result.correctness
        c["connections"] = n
        result.ok = (
            result.ok
            and c.get("unacked") == 0
            and c.get("ack_duplicated") == 0
            and c.get("ack_unexpected") == 0
            and c.get("acked") == c.get("sent")
        )
        if not half and relay is None and isinstance(result.figures["throughput"], int | float):
            _max_rate[ctx.repetition] = float(result.figures["throughput"])
        return result

    return run


@register("direct", "Rivet 1:1 chats, acked after a durable commit, against the bare echo")
def direct_cases(options: Options) -> list[Case]:
    return [
        Case("echo-plain", "bare echo, same connections and window", _echo(False)),
        Case(
            "echo-transport",
            "echo over Rivet's own transport, same connections and window",
            _transport_echo,
            "echo-plain",
        ),
        Case(
            "rivet",
            "N/2 pairs chatting 1:1, window in flight, acked after commit, delivered",
            _rivet(False),
            "echo-plain",
        ),
        Case(
            "relay",
            "Rivet's direct frames, no features: validated, acked, relayed (the floor)",
            _rivet(False, "relay"),
            "echo-plain",
        ),
        Case(
            "relay-durable",
            "relay, each message first stored as one row through Rivet's SQLite writer",
            _rivet(False, "relay-durable"),
            "echo-plain",
        ),
        Case("echo-plain-half", "bare echo, open loop at half Rivet's max rate", _echo(True)),
        Case(
            "rivet-half",
            "the pairs, open loop at half Rivet's max rate",
            _rivet(True),
            "echo-plain-half",
        ),
        Case(
            "relay-durable-half",
            "relay-durable, open loop at half Rivet's max rate (the floor of rivet-half)",
            _rivet(True, "relay-durable"),
            "echo-plain-half",
        ),
    ]
