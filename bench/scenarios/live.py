"""``live``: a join storm on a group live stream (L1).

Case ``join-storm``: Rivet (SQLite, as operators run it) with one host and ``connections``
viewers (default 2000, ``--tiny`` 20), all members of one group, shared by the load
workers. The viewers connect and authenticate first; the host goes live; then, at one
instant, every viewer sends ``live.join``. Units are joins.

Figures: joins per second over the storm (first join sent to last join answered), the join
round trips, the server's CPU per join and its peak RSS, and the coalescing the server
promises: ``counts_max_per_participant`` (the most ``ev.live.counts`` events any one
connection got) against ``counts_allowed`` (one per ``live_counts_seconds`` over the whole
observed time, plus two). The run is ``ok`` when every viewer joined, every participant's
last count says ``connections`` viewers, and no participant got more than allowed.

The server needs ``ulimit -n`` above the viewer count. Users are made with ``rivet users
bulk`` in the server's data directory, so this case cannot target ``--url``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import stats
from bench.context import CaseResult, Figure, Options, RunContext
from bench.harness import CpuSnapshot, ServerError, ServerHandle, ServerSpec
from bench.loadgen import LoadRun, WorkerSpec
from bench.patterns import START_DELAY_NS, split
from bench.scenarios import Case, register
from protocol import limits

_ROOT = str(Path(__file__).resolve().parents[2])

VIEWERS = (2000, 20)
#: Seconds between coalesced count events (the server's default ``live_counts_seconds``).
COUNTS_SECONDS = limits.DEFAULT_LIVE_COUNTS_SECONDS
#: After the last join, how long to keep listening for the counts to settle.
SETTLE_INTERVALS = 3
CONNECT_TIMEOUT = 120.0


def rivet_spec(member_limit: int) -> ServerSpec:
    pythonpath = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)
    argv = (
        "{python}",
        "-m",
        "server.cli",
        "serve",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--data-dir",
        "{data_dir}",
        "--group-member-limit",
        str(member_limit),
        "--log-level",
        "WARNING",
    )
    return ServerSpec("rivet-live", argv, env={"PYTHONPATH": pythonpath})


def create_users(data_dir: Path, count: int) -> list[dict[str, Any]]:
    """``count`` users with tokens, made by ``rivet users bulk`` (WAL lets it write while
    the server runs)."""
    out = data_dir.parent / "users.jsonl"
    env = {**os.environ, "PYTHONPATH": _ROOT}
    subprocess.run(
        [
            *(sys.executable, "-m", "server.cli", "users", "bulk"),
            *("--data-dir", str(data_dir), "--count", str(count), "--out", str(out)),
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )
    return [json.loads(line) for line in out.read_text().splitlines()]


def _data_dir(server: ServerHandle) -> Path:
    if server.log_path is None:
        raise ServerError("the live scenario starts its own server: it cannot use --url")
    return server.log_path.parent / "data"  # start_server's layout


def _join_storm(ctx: RunContext) -> CaseResult:
    viewers = ctx.pick(ctx.options.connections, *VIEWERS)
    workers = ctx.workers(viewers)
    if ctx.options.url:
        raise ServerError("the live scenario starts its own server: it cannot use --url")
    with ctx.server(rivet_spec(viewers + 1)) as server:
        host, *rest = create_users(_data_dir(server), viewers + 1)
        specs = [
            WorkerSpec(
                index=0,
                role="host",
                workload="bench.live_workloads:host",
                url=server.url,
                params={
                    "token": host["access_token"],
                    "viewers": [u["user_id"] for u in rest],
                    "connect_timeout": CONNECT_TIMEOUT,
                },
                cpus=ctx.cpu_plan.load,
            ),
            *(
                WorkerSpec(
                    index=i + 1,
                    role="viewer",
                    workload="bench.live_workloads:viewer",
                    url=server.url,
                    params={
                        "tokens": [u["access_token"] for u in rest[first : first + count]],
                        "connect_timeout": CONNECT_TIMEOUT,
                    },
                    cpus=ctx.cpu_plan.load,
                )
                for i, (first, count) in enumerate(split(viewers, workers))
            ),
        ]
        bar = ctx.progress("join-storm", viewers, None)
        with LoadRun(specs, on_progress=bar.update, start_timeout=CONNECT_TIMEOUT) as run:
            try:
                run.ready()
                watching = run.by_role("viewer")
                run.send([0], "start")
                live_id = run.wait([0], "live", 30.0)[0]["live_id"]
                start = time.monotonic_ns() + START_DELAY_NS
                run.send(watching, "go", live_id=live_id, start_ns=start)
                run.pump_until(start)
                before = CpuSnapshot.take(server.pid, run.pids)
                joined = run.wait(watching, "joined", CONNECT_TIMEOUT)
                after = CpuSnapshot.take(server.pid, run.pids)
                run.pump_until(time.monotonic_ns() + int(SETTLE_INTERVALS * COUNTS_SECONDS * 1e9))
                observed_s = (time.monotonic_ns() - start) / 1e9
                server.check_alive()
                memory = server.memory_kib()
                results = run.results()
            finally:
                bar.close()
    return _result(viewers, workers, start, joined, before, after, observed_s, memory, results)


def _result(
    viewers: int,
    workers: int,
    start: int,
    joined: dict[int, dict[str, Any]],
    before: CpuSnapshot,
    after: CpuSnapshot,
    observed_s: float,
    memory: dict[str, int] | None,
    results: dict[int, dict[str, Any]],
) -> CaseResult:
    watching = [r["result"] for i, r in results.items() if i != 0]
    host = results[0]["result"]
    joins = sum(int(j["joined"]) for j in joined.values())
    failed = sum(int(j["failed"]) for j in joined.values())
    last = max(int(j["last_joined_ns"]) for j in joined.values())
    storm_s = max(last - start, 1) / 1e9
    latencies = [
        done - began
        for i, r in results.items()
        if i != 0
        for began, done in zip(r["sent"], r["received"], strict=True)
    ]
    lat = stats.latency_summary_us(latencies)
    counts_max = max([int(host["counts"])] + [int(w["counts_max"]) for w in watching])
    allowed = math.ceil(observed_s / COUNTS_SECONDS) + 2
    last_seen = [w["last_viewers_min"] for w in watching] + [host["last_viewers"]]
    without = sum(int(w["without_counts"]) for w in watching)
    right_count = without == 0 and all(v == viewers for v in last_seen)
    cpu = None
    if before.server_s is not None and after.server_s is not None:
        cpu = after.server_s - before.server_s
    figures: dict[str, Figure] = {
        "throughput": round(joins / storm_s, 1),
        "units": joins,
        "storm_s": round(storm_s, 3),
        "latency_samples": lat["count"],
        "latency_mean_us": lat["mean_us"],
        "latency_p50_us": lat["p50_us"],
        "latency_p99_us": lat["p99_us"],
        "latency_p999_us": lat["p999_us"],
        "latency_max_us": lat["max_us"],
        "server_cpu_s": None if cpu is None else round(cpu, 3),
        "server_cpu_util": None if cpu is None else round(cpu / storm_s, 3),
        "server_cpu_us_per_unit": None if cpu is None or not joins else round(cpu * 1e6 / joins, 2),
        "server_peak_rss_mib": None if memory is None else round(memory["VmHWM"] / 1024, 1),
        "counts_max_per_participant": counts_max,
        "counts_allowed": allowed,
        "counts_frames_to_viewers": sum(int(w["counts_total"]) for w in watching),
    }
    correctness = {
        "viewers": viewers,
        "joined": joins,
        "failed": failed,
        "errors": [e for w in watching for e in w["errors"]],
        "final_viewer_counts": sorted({v for v in last_seen if v is not None}),
        "participants_without_counts": without,
    }
    notes = []
    if lat["count"] is not None and int(lat["count"] or 0) < 1000:
        notes.append(f"only {lat['count']} joins: p999 is the maximum or close to it")
    return CaseResult(
        unit="join",
        figures=figures,
        correctness=correctness,
        ok=joins == viewers and failed == 0 and right_count and counts_max <= allowed,
        params={"viewers": viewers, "workers": workers, "counts_seconds": COUNTS_SECONDS},
        notes=notes,
    )


@register("live", "group live stream: thousands of viewers join at once (L1)")
def live_cases(options: Options) -> list[Case]:
    return [
        Case(
            "join-storm",
            "N viewers join one live stream at the same instant; counts coalesced",
            _join_storm,
        )
    ]
