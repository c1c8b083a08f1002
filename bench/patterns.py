"""Measured runs of the three load shapes, for any server that speaks their workloads.

* ``request_reply``: N connections, each a closed loop with ``window`` messages in flight
  (or open loop at ``rate``); units are replies.
* ``fan_out``: one publisher, N subscribers; units are deliveries (one message reaching one
  subscriber).
* ``connect_storm``: N connections opened at once; units are accepted connections.

Each run has a *measured window*. With ``duration`` the load runs ``warmup + duration``
seconds and the window is the last ``duration`` seconds; with ``messages`` it runs until
every connection has sent its count and the window is the whole run. The server's CPU time
is read from its own ``/proc`` accounting at the window's edges; throughput counts what was
received inside the window; latency covers what was sent inside it. Correctness (lost,
duplicated, unexpected, misrouted, corrupt messages) covers the whole run, warm-up included.

A Rivet scenario reuses these with its own workload (``workload="pkg.mod:function"``, same
control exchange as ``bench.workloads``) and its own ``ServerSpec``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from bench import stats
from bench.context import CaseResult, Figure, RunContext
from bench.harness import CpuSampler, CpuSnapshot, ServerHandle
from bench.loadgen import LoadRun, WorkerSpec

START_DELAY_NS = 200_000_000  # the go message reaches every worker well before this
BUSY_THRESHOLD = 0.85
DRAIN_TIMEOUT = 15.0
SETTLE = 0.05
CONNECT_TIMEOUT = 30.0
STORM_BUCKET_S = 0.05
CORRECTNESS_KEYS = ("lost", "duplicated", "unexpected", "misrouted", "corrupt")

#: ``extra(role, first, count)``: more parameters for the worker that runs ``count``
#: connections from number ``first`` on, in ``role`` ("client", "publisher", ...).
ExtraParams = Callable[[str, int, int], dict[str, Any]]


@dataclass(frozen=True)
class Load:
    """How much load: ``duration`` (seconds, after ``warmup``) or ``messages``."""

    connections: int
    messages: int | None
    duration: float | None
    warmup: float
    rate: float | None
    window: int
    payload_size: int
    workers: int

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.duration is None):
            raise ValueError("give exactly one of messages and duration")
        if self.connections < 1 or self.window < 1 or self.workers < 1:
            raise ValueError("connections, window and workers must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def split(total: int, parts: int) -> list[tuple[int, int]]:
    """``(first, count)`` of ``total`` items shared as evenly as possible by ``parts``."""
    base, extra = divmod(total, parts)
    out: list[tuple[int, int]] = []
    first = 0
    for i in range(parts):
        count = base + (1 if i < extra else 0)
        out.append((first, count))
        first += count
    return [(f, c) for f, c in out if c > 0]


@dataclass
class _Window:
    """The measured window: its edges (ns) and CPU snapshots taken at them."""

    start_ns: int
    from_ns: int
    until_ns: int | None
    before: CpuSnapshot | None = None
    after: CpuSnapshot | None = None

    @property
    def seconds(self) -> float:
        assert self.until_ns is not None
        return max(self.until_ns - self.from_ns, 1) / 1e9

    @property
    def cpu_s(self) -> float | None:
        """Server CPU seconds in the window."""
        if self.before is None or self.after is None:
            return None
        if self.before.server_s is None or self.after.server_s is None:
            return None
        return self.after.server_s - self.before.server_s

    def cpu_figures(self, units: int) -> dict[str, Figure]:
        cpu = self.cpu_s
        out: dict[str, Figure] = {
            "server_cpu_s": None if cpu is None else round(cpu, 3),
            "server_cpu_util": None if cpu is None else round(cpu / self.seconds, 3),
            "server_cpu_us_per_unit": None
            if cpu is None or not units
            else round(cpu * 1e6 / units, 2),
            "load_cpu_util": None,
            "other_cpu_util": None,
        }
        if self.before is not None and self.after is not None:
            elapsed = max(self.after.t_ns - self.before.t_ns, 1) / 1e9
            load = self.after.load_s - self.before.load_s
            busy = self.after.system_busy_s - self.before.system_busy_s
            other = max(busy - load - (cpu or 0.0), 0.0)
            out["load_cpu_util"] = round(load / elapsed, 3)
            out["other_cpu_util"] = round(other / elapsed, 3)
        return out


def _window(load: Load) -> _Window:
    start = time.monotonic_ns() + START_DELAY_NS
    if load.duration is None:
        return _Window(start, start, None)
    begin = start + int(load.warmup * 1e9)
    return _Window(start, begin, begin + int(load.duration * 1e9))


def _snapshot(run: LoadRun, server: ServerHandle) -> CpuSnapshot:
    return CpuSnapshot.take(server.pid, run.pids)


def _run_window(run: LoadRun, server: ServerHandle, win: _Window) -> None:
    """Snapshot CPU at the window's start, and in duration mode at its end too."""
    run.pump_until(win.from_ns)
    win.before = _snapshot(run, server)
    if win.until_ns is not None:
        run.pump_until(win.until_ns)
        win.after = _snapshot(run, server)


def _merge(
    results: dict[int, dict[str, Any]], indices: Sequence[int]
) -> tuple[array[int], array[int]]:
    sent, received = array("q"), array("q")
    for i in indices:
        sent.extend(results[i]["sent"])
        received.extend(results[i]["received"])
    return sent, received


def _in_window(values: array[int], win: _Window) -> int:
    assert win.until_ns is not None
    lo, hi = win.from_ns, win.until_ns
    return sum(1 for v in values if lo <= v <= hi)


def _latencies(sent: array[int], received: array[int], win: _Window) -> Iterator[int]:
    assert win.until_ns is not None
    lo, hi = win.from_ns, win.until_ns
    return (r - s for s, r in zip(sent, received, strict=True) if lo <= s <= hi)


def _sum_tallies(tallies: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The standard counts, plus any other count a workload reports (not times: ``*_ns``)."""
    keys = ["connections", "sent", "received", *CORRECTNESS_KEYS]
    for tally in tallies:
        for key, value in tally.items():
            if key not in keys and not key.endswith("_ns") and _is_count(value):
                keys.append(key)
    return {k: sum(int(t.get(k, 0)) for t in tallies) for k in keys}


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exactly_once(tally: dict[str, int]) -> bool:
    return (
        tally["sent"] > 0
        and tally["received"] == tally["sent"]
        and all(tally[k] == 0 for k in CORRECTNESS_KEYS)
    )


def _server_figures(win: _Window, units: int, memory: dict[str, int] | None) -> dict[str, Figure]:
    return {
        **win.cpu_figures(units),
        "server_peak_rss_mib": None if memory is None else round(memory["VmHWM"] / 1024, 1),
    }


def _latency_figures(prefix: str, latencies: Iterator[int]) -> dict[str, Figure]:
    summary = stats.latency_summary_us(latencies)
    return {
        f"{prefix}_samples": summary["count"],
        f"{prefix}_mean_us": summary["mean_us"],
        f"{prefix}_p50_us": summary["p50_us"],
        f"{prefix}_p99_us": summary["p99_us"],
        f"{prefix}_p999_us": summary["p999_us"],
        f"{prefix}_max_us": summary["max_us"],
    }


def _notes(figures: dict[str, Figure], load_cpus: int, limit: str) -> list[str]:
    notes: list[str] = []
    util = figures.get("server_cpu_util")
    load = figures.get("load_cpu_util")
    other = figures.get("other_cpu_util")
    if isinstance(util, float | int) and util < BUSY_THRESHOLD:
        if isinstance(load, float | int) and load >= BUSY_THRESHOLD * load_cpus:
            why = f"the load generator, which kept its {load_cpus} CPU {load:.0%} busy"
        elif isinstance(other, float | int) and other >= 0.1:
            why = f"other processes competing for the CPUs, or {limit}"
        else:
            why = limit
        notes.append(f"server busy {util:.0%} of the window: throughput is bounded by {why}")
    if isinstance(other, float | int) and other >= 0.1:
        notes.append(
            f"other processes on this machine used {other:.2f} CPUs during the window: "
            "these figures are disturbed"
        )
    lat = figures.get("latency_samples")
    if isinstance(lat, int) and lat < 1000:
        notes.append(f"only {lat} latency samples: p999 is the maximum or close to it")
    return notes


def _limit(load: Load) -> str:
    return f"the rate ({load.rate:g}/s)" if load.rate else f"the window ({load.window} in flight)"


def _series(
    sent: array[int], received: array[int], win: _Window, cpu: CpuSampler | None
) -> dict[str, Any]:
    span = ((max(received) if received else win.start_ns) - win.start_ns) / 1e9
    bucket = max(0.1, round(span / 120, 2))
    latency = array("q", (r - s for s, r in zip(sent, received, strict=True)))
    return {
        "bucket_s": bucket,
        "window_from_s": round((win.from_ns - win.start_ns) / 1e9, 3),
        "window_until_s": None
        if win.until_ns is None
        else round((win.until_ns - win.start_ns) / 1e9, 3),
        "latency": stats.time_series(received, latency, win.start_ns, bucket),
        "server_cpu": [] if cpu is None else stats.cpu_series(cpu.samples, win.start_ns),
    }


def _sampler(stack: ExitStack, server: ServerHandle) -> CpuSampler | None:
    if server.pid is None:
        return None
    return stack.enter_context(CpuSampler(server.pid))


def _timeout(load: Load) -> float:
    if load.duration is not None:
        return load.warmup + load.duration + DRAIN_TIMEOUT + 30.0
    return 600.0


def load_cpus_of(ctx: RunContext) -> int:
    return len(ctx.cpu_plan.load) if ctx.cpu_plan.load else len(os.sched_getaffinity(0))


def request_reply(
    ctx: RunContext,
    server: ServerHandle,
    load: Load,
    *,
    workload: str = "bench.workloads:echo",
    path: str = "/",
    unit: str = "msg",
    label: str = "request-reply",
    extra: ExtraParams | None = None,
) -> CaseResult:
    """Closed- or open-loop request/reply on ``load.connections`` connections.

    ``extra(role, first, count)`` adds parameters to each worker's (a Rivet workload's
    tokens for its share of the connections, say).
    """
    rate_per_conn = None if load.rate is None else load.rate / load.connections
    specs = [
        WorkerSpec(
            index=i,
            role="client",
            workload=workload,
            url=server.url,
            params={
                "connections": count,
                "conn_base": first,
                "messages": load.messages,
                "rate": rate_per_conn,
                "window": load.window,
                "payload_size": load.payload_size,
                "path": path,
                "connect_timeout": CONNECT_TIMEOUT,
                "drain_timeout": DRAIN_TIMEOUT,
                "settle": SETTLE,
                **(extra("client", first, count) if extra else {}),
            },
            cpus=ctx.cpu_plan.load,
        )
        for i, (first, count) in enumerate(split(load.connections, load.workers))
    ]
    total = None if load.messages is None else load.messages * load.connections
    bar = ctx.progress(label, total, None if load.duration is None else load.duration + load.warmup)
    with ExitStack() as stack:
        run = stack.enter_context(LoadRun(specs, on_progress=bar.update))
        stack.callback(bar.close)
        run.ready()
        win = _window(load)
        cpu = _sampler(stack, server)
        run.send(run.indices, "go", start_ns=win.start_ns, stop_ns=win.until_ns)
        _run_window(run, server, win)
        finished = run.wait(run.indices, "finished", _timeout(load))
        if win.until_ns is None:
            win.after = _snapshot(run, server)
            win.until_ns = max(f["last_received_ns"] for f in finished.values())
        server.check_alive()
        memory = server.memory_kib()
        results = run.results()
    tally = _sum_tallies([r["result"] for r in results.values()])
    sent, received = _merge(results, run.indices)
    units = _in_window(received, win)
    figures: dict[str, Figure] = {
        "throughput": round(units / win.seconds, 1),
        "units": units,
        "window_s": round(win.seconds, 3),
        "connections": load.connections,
        **_latency_figures("latency", _latencies(sent, received, win)),
        **_server_figures(win, units, memory),
    }
    # A workload whose replies are not its unit (Rivet's acks) may report their latencies.
    acks = array("q")
    for i in run.indices:
        acks.extend(results[i]["result"].get("ack_latency_ns", ()))
    if acks:
        figures.update(_latency_figures("ack_latency", iter(acks)))
    return CaseResult(
        unit=unit,
        figures=figures,
        correctness=tally,
        ok=_exactly_once(tally),
        params={**load.as_json(), "workload": workload, "path": path},
        server=server.as_json(),
        series=_series(sent, received, win, cpu),
        notes=_notes(figures, load_cpus_of(ctx), _limit(load)),
    )


def fan_out(
    ctx: RunContext,
    server: ServerHandle,
    load: Load,
    *,
    publisher_workload: str = "bench.workloads:publisher",
    subscriber_workload: str = "bench.workloads:subscriber",
    publisher_path: str = "/pub",
    subscriber_path: str = "/sub",
    label: str = "fan-out",
    extra: ExtraParams | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> CaseResult:
    """One publisher, ``load.connections`` subscribers; units are deliveries.

    ``load.messages`` and ``load.rate`` count published messages; ``load.window`` bounds
    the messages not yet delivered to every subscriber (end-to-end: the subscriber workers
    report their watermarks to the publisher over pipes) and, separately, the publisher's
    unacknowledged messages.
    """
    common = {"connect_timeout": connect_timeout, "drain_timeout": DRAIN_TIMEOUT, "settle": SETTLE}
    shares = split(load.connections, load.workers)
    pipes = [multiprocessing.Pipe(duplex=False) for _ in shares]
    specs = [
        WorkerSpec(
            index=0,
            role="publisher",
            workload=publisher_workload,
            url=server.url,
            params={
                **common,
                "connections": 1,
                "conn_base": 0,
                "messages": load.messages,
                "rate": load.rate,
                "window": load.window,
                "payload_size": load.payload_size,
                "path": publisher_path,
                **(extra("publisher", 0, 1) if extra else {}),
            },
            cpus=ctx.cpu_plan.load,
            links={"watermarks": [reader for reader, _ in pipes]},
        )
    ]
    for (first, count), (_, writer) in zip(shares, pipes, strict=True):
        specs.append(
            WorkerSpec(
                index=len(specs),
                role="subscriber",
                workload=subscriber_workload,
                url=server.url,
                params={
                    **common,
                    "connections": count,
                    "conn_base": first,
                    "path": subscriber_path,
                    **(extra("subscriber", first, count) if extra else {}),
                },
                cpus=ctx.cpu_plan.load,
                links={"watermark": writer},
            )
        )
    total = None if load.messages is None else load.messages * load.connections
    bar = ctx.progress(label, total, None if load.duration is None else load.duration + load.warmup)
    with ExitStack() as stack:
        run = stack.enter_context(
            LoadRun(specs, on_progress=bar.update, start_timeout=connect_timeout)
        )
        stack.callback(bar.close)
        publisher, subscribers = run.by_role("publisher"), run.by_role("subscriber")
        run.ready()
        win = _window(load)
        cpu = _sampler(stack, server)
        run.send(run.indices, "go", start_ns=win.start_ns, stop_ns=win.until_ns)
        _run_window(run, server, win)
        published = run.wait(publisher, "finished", _timeout(load))[0]
        run.send(subscribers, "stop", expected=published["sent"])
        finished = run.wait(subscribers, "finished", DRAIN_TIMEOUT + 30.0)
        if win.until_ns is None:
            win.after = _snapshot(run, server)
            win.until_ns = max(f["last_received_ns"] for f in finished.values())
        server.check_alive()
        memory = server.memory_kib()
        results = run.results()
    deliveries = _sum_tallies([results[i]["result"] for i in subscribers])
    acks = _sum_tallies([results[i]["result"] for i in publisher])
    sent, received = _merge(results, subscribers)
    ack_sent, ack_received = _merge(results, publisher)
    units = _in_window(received, win)
    publishes = _in_window(ack_received, win)
    figures: dict[str, Figure] = {
        "throughput": round(units / win.seconds, 1),
        "units": units,
        "window_s": round(win.seconds, 3),
        "subscribers": load.connections,
        "publishes_per_s": round(publishes / win.seconds, 1),
        **_latency_figures("latency", _latencies(sent, received, win)),
        **_latency_figures("ack_latency", _latencies(ack_sent, ack_received, win)),
        **_server_figures(win, units, memory),
    }
    cpu_s = win.cpu_s
    figures["server_cpu_us_per_publish"] = (
        None if cpu_s is None or not publishes else round(cpu_s * 1e6 / publishes, 2)
    )
    notes = _notes(figures, load_cpus_of(ctx), _limit(load))
    stalled = bool(published.get("stalled"))
    if stalled:
        notes.append(f"the publisher stopped: a message was not delivered within {DRAIN_TIMEOUT} s")
    return CaseResult(
        unit="delivery",
        figures=figures,
        correctness={
            "published": published["sent"],
            "stalled": stalled,
            "acks": acks,
            **deliveries,
        },
        ok=_exactly_once(deliveries) and _exactly_once(acks) and not stalled,
        params={
            **load.as_json(),
            "publisher": publisher_workload,
            "subscriber": subscriber_workload,
        },
        server=server.as_json(),
        series=_series(sent, received, win, cpu),
        notes=notes,
    )


def connect_storm(
    ctx: RunContext,
    server: ServerHandle,
    connections: int,
    workers: int,
    *,
    concurrency: int | None = None,
    workload: str = "bench.workloads:storm",
    path: str = "/",
    settle: float = 0.5,
    label: str = "connect-storm",
    extra: ExtraParams | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> CaseResult:
    """Open ``connections`` connections at once; time to accept them all, RSS per connection.

    ``concurrency`` caps the handshakes in flight per worker (``None``: all at once). The
    window runs from the go signal to the last completed handshake; RSS per connection is
    the server's VmRSS with every connection open (after ``settle`` seconds) minus its VmRSS
    before the storm, divided by the connections.
    """
    specs = [
        WorkerSpec(
            index=i,
            role="storm",
            workload=workload,
            url=server.url,
            params={
                "connections": count,
                "concurrency": concurrency,
                "path": path,
                "connect_timeout": connect_timeout,
                **(extra("storm", first, count) if extra else {}),
            },
            cpus=ctx.cpu_plan.load,
        )
        for i, (first, count) in enumerate(split(connections, workers))
    ]
    bar = ctx.progress(label, connections, None)
    with ExitStack() as stack:
        run = stack.enter_context(LoadRun(specs, on_progress=bar.update))
        stack.callback(bar.close)
        run.ready()
        before = server.memory_kib()
        start = time.monotonic_ns() + START_DELAY_NS
        win = _Window(start, start, None)
        run.send(run.indices, "go", start_ns=start)
        run.pump_until(start)
        win.before = _snapshot(run, server)
        finished = run.wait(run.indices, "finished", connect_timeout + 30.0)
        win.after = _snapshot(run, server)
        run.pump_until(time.monotonic_ns() + int(settle * 1e9))
        server.check_alive()
        after = server.memory_kib()
        results = run.results()
    established = sum(int(f["established"]) for f in finished.values())
    failed = sum(int(f["failed"]) for f in finished.values())
    errors = [e for f in finished.values() for e in f["errors"]]
    last = max(int(f["last_established_ns"]) for f in finished.values())
    win.until_ns = max(last, win.from_ns + 1)
    began, done = _merge(results, run.indices)
    handshake = array("q", (d - b for b, d in zip(began, done, strict=True)))
    accept_s = win.seconds
    figures: dict[str, Figure] = {
        "throughput": round(established / accept_s, 1),
        "units": established,
        "connections": connections,
        "accept_time_s": round(accept_s, 3),
        **_latency_figures("latency", iter(handshake)),
        **_server_figures(win, established, after),
    }
    if before is not None and after is not None:
        figures["server_rss_before_mib"] = round(before["VmRSS"] / 1024, 1)
        figures["server_rss_after_mib"] = round(after["VmRSS"] / 1024, 1)
        figures["rss_per_connection_kib"] = (
            round((after["VmRSS"] - before["VmRSS"]) / established, 2) if established else None
        )
    correctness = {
        "connections": connections,
        "established": established,
        "failed": failed,
        "errors": errors,
    }
    return CaseResult(
        unit="connection",
        figures=figures,
        correctness=correctness,
        ok=established == connections and failed == 0,
        params={"connections": connections, "workers": workers, "concurrency": concurrency},
        server=server.as_json(),
        series={
            "bucket_s": STORM_BUCKET_S,
            "window_from_s": 0.0,
            "window_until_s": round(accept_s, 3),
            "latency": stats.time_series(done, handshake, start, STORM_BUCKET_S),
            "server_cpu": [],
        },
        notes=_notes(figures, load_cpus_of(ctx), "the handshakes in flight"),
    )
