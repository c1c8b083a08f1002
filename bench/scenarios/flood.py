"""``flood``: does one flooding client hurt everyone else's latency? (C2)

The server runs with its default rate limits (the other Rivet scenarios lift them). Pairs
of users chat 1:1 in open loop at a fixed, moderate rate (``--rate``, default 200 messages a
second in all; ``--connections`` counts connections, two per pair), durable acks as in
``direct``; latency is send to delivery at the peer.

* ``quiet``: just the chat: the reference.
* ``flood``: the same chat while ``bench.flooder`` (a separate process, one user) sends
  ``ping`` ops and empty frames as fast as it can, reconnecting at once each time the server
  closes it with 4051. The target: its ``latency_p99_us`` at most 1.5x ``quiet``'s
  (``p99_vs_quiet``, also in the report's ratio column); the flood figures say how hard it
  pushed (``flood_frames``, ``flood_rate_limited``, ``flood_closes_4051``).

Both cases must deliver every message exactly once, flood or not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import patterns
from bench.context import CaseResult, Options, RunContext
from bench.harness import ServerHandle
from bench.rivet_server import ROOT, User, rivet_spec, users_of
from bench.scenarios import Case, CaseFn, register
from bench.scenarios._rivet import load

CONNECTIONS = (32, 4)  # (normal, tiny): two per pair
WINDOW = 8
TINY_MESSAGES = 20
RATE = 200.0
P99_TARGET = 1.5
#: The server's own C2 defaults, restored over ``rivet_spec``'s lifted limits.
DEFAULT_LIMITS = (
    *("--send-rate-per-second", "20", "--send-burst", "100"),
    *("--request-rate-per-second", "200"),
)
#: ``quiet``'s p99 by repetition, for ``p99_vs_quiet``.
_quiet_p99: dict[int, float] = {}


def _connections(ctx: RunContext) -> int:
    n = ctx.pick(ctx.options.connections, *CONNECTIONS)
    return max(2, n - n % 2)


@contextmanager
def _flooder(ctx: RunContext, server: ServerHandle, user: User, seconds: float) -> Iterator[Any]:
    """``bench.flooder`` running against ``server`` for ``seconds``; yields a dict that holds
    its summary once the block exits."""
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rivet-flood-") as tmp:
        out = Path(tmp) / "flood.json"
        argv = [
            *(sys.executable, "-m", "bench.flooder", "--url", server.url),
            *("--token", user.access_token, "--seconds", str(seconds), "--out", str(out)),
        ]
        path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": path})
        if ctx.cpu_plan.load:
            os.sched_setaffinity(proc.pid, ctx.cpu_plan.load)
        # The attacker would be on its own machine: on ours it must not take the CPU the
        # measuring clients need, only what they leave idle (the server is still flooded).
        os.setpriority(os.PRIO_PROCESS, proc.pid, 19)
        try:
            yield summary
        finally:
            try:
                proc.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if out.exists():
                summary.update(json.loads(out.read_text()))


def _case(flooding: bool) -> CaseFn:
    def run(ctx: RunContext) -> CaseResult:
        n = _connections(ctx)
        rate = ctx.options.rate or RATE
        shape = load(ctx, connections=n // 2, tiny_messages=TINY_MESSAGES, window=WINDOW, rate=rate)
        spec = rivet_spec("rivet-flood", users=n + 1, extra=DEFAULT_LIMITS)
        seconds = (shape.duration or 2.0) + shape.warmup + 2.0
        with ctx.server(spec) as server:
            users = users_of(ctx, server, n + 1)

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

            def measure() -> CaseResult:
                return patterns.request_reply(
                    ctx,
                    server,
                    shape,
                    workload="bench.rivet_workloads:direct",
                    label="flood" if flooding else "quiet",
                    extra=extra,
                )

            if flooding:
                with _flooder(ctx, server, users[n], seconds) as flood:
                    result = measure()
            else:
                result, flood = measure(), {}
        return _finish(ctx, result, flood, flooding=flooding, connections=n, rate=rate)

    return run


def _finish(
    ctx: RunContext,
    result: CaseResult,
    flood: dict[str, Any],
    *,
    flooding: bool,
    connections: int,
    rate: float,
) -> CaseResult:
    figures = result.figures
    figures["connections"] = connections
    figures["offered_rate"] = rate
    p99 = figures.get("latency_p99_us")
    if not flooding:
        if isinstance(p99, int | float):
            _quiet_p99[ctx.repetition] = float(p99)
    else:
        replies = flood.get("replies", {})
        closes = flood.get("closes", {})
        figures["flood_frames"] = flood.get("sent")
        figures["flood_rate_limited"] = replies.get("4000")
        figures["flood_closes_4051"] = closes.get("4051")
        figures["flood_connections"] = flood.get("connections")
        quiet = _quiet_p99.get(ctx.repetition)
        ratio = None
        if quiet and isinstance(p99, int | float):
            ratio = round(p99 / quiet, 3)
        figures["p99_vs_quiet"] = ratio
        if ratio is not None and ratio > P99_TARGET:
            result.notes.append(f"p99 under flood is {ratio}x quiet's (target {P99_TARGET}x)")
        if not flood.get("sent"):
            result.notes.append("the flooder sent nothing")
            result.ok = False
    c = result.correctness
    result.ok = (
        result.ok
        and c.get("unacked") == 0
        and c.get("ack_duplicated") == 0
        and c.get("acked") == c.get("sent")
    )
    return result


@register("flood", "one client floods: the others' p99 latency against a quiet run (C2)")
def flood_cases(options: Options) -> list[Case]:
    return [
        Case("quiet", "pairs chatting at a fixed rate, default rate limits", _case(False)),
        Case("flood", "the same while one client floods and reconnects", _case(True), "quiet"),
    ]
