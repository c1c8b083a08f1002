"""``storm``: thousands of devices reconnecting at once after a server restart.

Cases (``--connections``, default 5,000 devices, ``--tiny`` 20):

* ``bare``: the bare echo server accepting as many fresh connections, opened at once by the
  same load generator (same workers): the reference time.
* ``rivet``: N devices (SDK clients, one user each) and N/100 senders; each device has a
  single chat with one sender.

  1. Every device connects and syncs to the head; each sender sends one message to each of
     its devices (acknowledged: durable), which the devices get live.
  2. The server restarts: SIGINT (it closes every connection with 1001), then ``rivet
     serve`` again on the same data directory and port.
  3. The senders reconnect and send one more message to each device (durable, unseen).
  4. At one instant every device reconnects and catches up with the SDK's ``catch_up``
     (hello with its token, ``sync`` from its token until current, ``ack``).

  Measured: the time from that instant until the last device is current (``accept_time_s``,
  the target is at most 3x the bare server's time to accept as many), each device's time
  to current (latency), server CPU per device. Every device must have both messages exactly
  once after the SDK's de-duplication (``lost``, ``duplicated`` must be 0);
  ``redeliveries`` (the first message again, in the catch-up) is reported separately. A
  device refused or cut off on the way (the server closes a connection that has not
  authenticated within its handshake deadline, 4001) tries again after a jittered,
  doubling back-off, as an app would: ``retries`` counts those attempts.

The restart needs a server we start: this scenario cannot use ``--url``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from bench import stats
from bench.context import CaseResult, Figure, Options, RunContext
from bench.harness import CpuSnapshot, ServerError, free_port, start_server
from bench.loadgen import LoadRun, WorkerSpec
from bench.patterns import BUSY_THRESHOLD, START_DELAY_NS, load_cpus_of, split
from bench.rivet_server import read_users, rivet_spec, template_for
from bench.scenarios import Case, register
from bench.scenarios._rivet import PAYLOAD_SIZE, bare_accept, removed_unless_failed

DEVICES = (5000, 20)
DEVICES_PER_SENDER = 100
WINDOW = 8
TIMEOUT = 300.0
CONNECT_TIMEOUT = 240.0


def _count(ctx: RunContext) -> int:
    return ctx.pick(ctx.options.connections, *DEVICES)


def _bare(ctx: RunContext) -> CaseResult:
    return bare_accept(ctx, _count(ctx), "bare")


def _rivet(ctx: RunContext) -> CaseResult:
    if ctx.options.url:
        raise ServerError("the storm scenario restarts its server: it cannot use --url")
    n = _count(ctx)
    n_senders = max(1, -(-n // DEVICES_PER_SENDER))
    spec = rivet_spec("rivet-storm", users=n + n_senders, connections=n + n_senders)
    users = read_users(template_for(n + n_senders) / "users.jsonl")
    senders, devices = users[:n_senders], users[n_senders:]
    targets: list[list[int]] = [[] for _ in senders]
    for i, device in enumerate(devices):
        targets[i % n_senders].append(device.user_id)
    workers = ctx.workers(n)
    workdir = Path(tempfile.mkdtemp(prefix="rivet-bench-storm-"))
    (workdir / "data").mkdir()
    assert spec.prepare is not None
    spec.prepare(workdir / "data")
    port = free_port()
    common = {"connect_timeout": CONNECT_TIMEOUT, "drain_timeout": TIMEOUT}
    with removed_unless_failed(workdir, "the storm"), contextlib.ExitStack() as outer:
        first = contextlib.ExitStack()
        outer.callback(first.close)
        server = first.enter_context(
            start_server(spec, ctx.cpu_plan.server, port=port, workdir=workdir)
        )
        specs = [
            WorkerSpec(
                index=i,
                role="devices",
                workload="bench.rivet_sync_workloads:storm_clients",
                url=server.url,
                params={
                    **common,
                    "devices": [
                        [
                            d.user_id,
                            d.device_id,
                            d.access_token,
                            d.refresh_token,
                            senders[(begin + j) % n_senders].user_id,
                        ]
                        for j, d in enumerate(devices[begin : begin + count])
                    ],
                },
                cpus=ctx.cpu_plan.load,
            )
            for i, (begin, count) in enumerate(split(n, workers))
        ]
        sender_index = len(specs)
        specs.append(
            WorkerSpec(
                index=sender_index,
                role="senders",
                workload="bench.rivet_sync_workloads:senders",
                url=server.url,
                params={
                    **common,
                    "senders": [
                        [s.user_id, s.access_token, t]
                        for s, t in zip(senders, targets, strict=True)
                    ],
                    "phases": 2,
                    "window": WINDOW,
                    "payload_size": PAYLOAD_SIZE,
                },
                cpus=ctx.cpu_plan.load,
            )
        )
        run = outer.enter_context(LoadRun(specs, start_timeout=CONNECT_TIMEOUT))
        clients = run.by_role("devices")
        run.ready()
        # 1. one message each, received live
        run.send(clients, "expect", count=1)
        run.send([sender_index], "send", count=1, first_n=0)
        batch_a = run.wait([sender_index], "sent", TIMEOUT)[sender_index]
        live = run.wait(clients, "received", TIMEOUT)
        # 2. restart
        first.close()
        run.wait(clients, "disconnected", CONNECT_TIMEOUT)
        server = outer.enter_context(
            start_server(spec, ctx.cpu_plan.server, port=port, workdir=workdir)
        )
        # 3. one more message each, while the devices are away
        run.send([sender_index], "send", count=1, first_n=1, reconnect=True)
        batch_b = run.wait([sender_index], "sent", TIMEOUT)[sender_index]
        # 4. the storm
        start = time.monotonic_ns() + START_DELAY_NS
        run.send(clients, "go", start_ns=start, expected=2)
        run.pump_until(start)
        before = CpuSnapshot.take(server.pid, run.pids)
        current = run.wait(clients, "current", TIMEOUT)
        after = CpuSnapshot.take(server.pid, run.pids)
        server.check_alive()
        memory = server.memory_kib()
        results = run.results()
    done = sum(int(c["current"]) for c in current.values())
    last = max(int(c["last_current_ns"]) for c in current.values())
    storm_s = max(last - start, 1) / 1e9
    latency = stats.latency_summary_us(
        d - b
        for i in clients
        for b, d in zip(results[i]["sent"], results[i]["received"], strict=True)
    )
    cpu = None
    if before.server_s is not None and after.server_s is not None:
        cpu = after.server_s - before.server_s
    elapsed = max(after.t_ns - before.t_ns, 1) / 1e9
    load_s = after.load_s - before.load_s
    other = max(
        (after.system_busy_s - before.system_busy_s)
        - (after.load_s - before.load_s)
        - (cpu or 0.0),
        0.0,
    )
    figures: dict[str, Figure] = {
        "throughput": round(done / storm_s, 1),
        "units": done,
        "connections": n,
        "accept_time_s": round(storm_s, 3),
        "latency_samples": latency["count"],
        "latency_p50_us": latency["p50_us"],
        "latency_p99_us": latency["p99_us"],
        "latency_p999_us": latency["p999_us"],
        "latency_max_us": latency["max_us"],
        "server_cpu_s": None if cpu is None else round(cpu, 3),
        "server_cpu_util": None if cpu is None else round(cpu / storm_s, 3),
        "server_cpu_us_per_unit": None if cpu is None or not done else round(cpu * 1e6 / done, 2),
        "server_peak_rss_mib": None if memory is None else round(memory["VmHWM"] / 1024, 1),
        # The devices are SDK clients on the load CPUs: when they are the busy side, the
        # storm's time is the load generator's as much as the server's.
        "load_cpu_util": round(load_s / elapsed, 3),
        "load_cpu_us_per_unit": None if not done else round(load_s * 1e6 / done, 2),
        "other_cpu_util": round(other / elapsed, 3),
    }
    correctness: dict[str, object] = {
        "devices": n,
        "current": done,
        "received": done,
        "failed": sum(int(c["failed"]) for c in current.values()),
        "retries": sum(int(c["retries"]) for c in current.values()),
        "errors": [e for c in current.values() for e in c["errors"]],
        "sent": int(batch_a["sent"]) + int(batch_b["sent"]),
        "acked": int(batch_a["acked"]) + int(batch_b["acked"]),
        "live_before_restart": sum(int(r["received"]) for r in live.values()),
        "lost": sum(int(c["lost"]) for c in current.values()),
        "duplicated": sum(int(c["duplicated"]) for c in current.values()),
        "unexpected": sum(int(c["unexpected"]) for c in current.values()),
        "redeliveries": sum(int(c["redeliveries"]) for c in current.values()),
    }
    ok = (
        done == n
        and correctness["sent"] == correctness["acked"] == 2 * n
        and correctness["lost"] == correctness["duplicated"] == correctness["unexpected"] == 0
    )
    notes = []
    load_cpus = load_cpus_of(ctx)
    if load_s / elapsed >= BUSY_THRESHOLD * load_cpus:
        notes.append(
            f"the load generator kept its {load_cpus} CPU {load_s / elapsed:.0%} busy: "
            "the storm's time is bounded by the devices' own work as much as by the server"
        )
    if figures["other_cpu_util"] and float(figures["other_cpu_util"]) >= 0.1:
        notes.append(
            f"other processes used {figures['other_cpu_util']:.2f} CPUs during the storm: "
            "these figures are disturbed"
        )
    return CaseResult(
        unit="connection",
        figures=figures,
        correctness=correctness,
        ok=ok,
        params={"devices": n, "senders": n_senders, "workers": workers},
        server=server.as_json(),
        notes=notes,
    )


@register("storm", "devices reconnecting at once after a server restart, each catching up")
def storm_cases(options: Options) -> list[Case]:
    return [
        Case("bare", "N fresh connections opened at once to the bare echo server", _bare),
        Case(
            "rivet",
            "N devices reconnect at once after a restart, authenticate and catch up",
            _rivet,
            "bare",
        ),
    ]
