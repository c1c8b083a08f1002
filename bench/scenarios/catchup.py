"""``catchup``: one device offline across many messages in many conversations.

Case ``rivet`` (``--connections`` sets the conversations, default 100, ``--messages`` the
messages per conversation while offline, default 100; ``--tiny`` 5 x 10):

1. The device (the SDK's ``RivetClient``) connects and syncs to the head.
2. *Live phase*: one peer per conversation sends ``messages`` into its single chat with the
   device, ``window`` unacknowledged per peer, while the device is online and gets them
   live. The server's CPU from the first send to the last delivery, per message, is the
   cost of a live-delivered message (committing it, acknowledging it, pushing it).
3. The device syncs (its token moves past what came live) and disconnects.
4. *Offline phase*: the peers send as many again.
5. *Catch-up*: the device connects and pages through ``sync`` (500 events a page) until
   current, then acknowledges. Measured: the time from the go signal to current, the
   round trip of each page (the latency figures), and the server's CPU per caught-up
   message, whose target is at most half that of a live-delivered one
   (``catchup_to_live_cpu``).

Every message of every conversation must reach the device exactly once after the SDK's
de-duplication, live or caught up (``lost``, ``duplicated``); ``redeliveries`` counts what
the SDK dropped as seen before.
"""

from __future__ import annotations

import time
from array import array
from typing import Any

from bench import stats
from bench.context import CaseResult, Figure, Options, RunContext
from bench.harness import CpuSnapshot
from bench.loadgen import LoadRun, WorkerSpec
from bench.patterns import START_DELAY_NS
from bench.rivet_server import rivet_spec, users_of
from bench.scenarios import Case, register
from bench.scenarios._rivet import PAYLOAD_SIZE
from protocol.ids import direct_conversation_id

CONVERSATIONS = (100, 5)
PER_CONVERSATION = (100, 10)
WINDOW = 4
TIMEOUT = 300.0
CONNECT_TIMEOUT = 60.0


def _cpu(before: CpuSnapshot, after: CpuSnapshot) -> float | None:
    if before.server_s is None or after.server_s is None:
        return None
    return after.server_s - before.server_s


def _other(before: CpuSnapshot, after: CpuSnapshot, server: float | None) -> float:
    elapsed = max(after.t_ns - before.t_ns, 1) / 1e9
    busy = after.system_busy_s - before.system_busy_s
    load = after.load_s - before.load_s
    return round(max(busy - load - (server or 0.0), 0.0) / elapsed, 3)


def _per(cpu: float | None, units: int) -> float | None:
    return None if cpu is None or not units else round(cpu * 1e6 / units, 2)


def _catchup(ctx: RunContext) -> CaseResult:
    convs = ctx.pick(ctx.options.connections, *CONVERSATIONS)
    per_conv = ctx.pick(ctx.options.messages, *PER_CONVERSATION)
    window = ctx.pick(ctx.options.window, WINDOW, WINDOW)
    payload = ctx.pick(ctx.options.payload_size, PAYLOAD_SIZE, PAYLOAD_SIZE)
    with ctx.server(rivet_spec("rivet-catchup", users=convs + 1)) as server:
        device, *peers = users_of(ctx, server, convs + 1)
        expected = {direct_conversation_id(device.user_id, p.user_id): 2 * per_conv for p in peers}
        common = {"connect_timeout": CONNECT_TIMEOUT, "drain_timeout": TIMEOUT}
        specs = [
            WorkerSpec(
                index=0,
                role="device",
                workload="bench.rivet_sync_workloads:catchup_device",
                url=server.url,
                params={
                    **common,
                    "device": [
                        device.user_id,
                        device.device_id,
                        device.access_token,
                        device.refresh_token,
                    ],
                },
                cpus=ctx.cpu_plan.load,
            ),
            WorkerSpec(
                index=1,
                role="senders",
                workload="bench.rivet_sync_workloads:senders",
                url=server.url,
                params={
                    **common,
                    "senders": [[p.user_id, p.access_token, [device.user_id]] for p in peers],
                    "phases": 2,
                    "window": window,
                    "payload_size": payload,
                },
                cpus=ctx.cpu_plan.load,
            ),
        ]
        live_messages = convs * per_conv
        with LoadRun(specs, start_timeout=CONNECT_TIMEOUT) as run:
            run.ready()
            run.send([0], "online", expected=live_messages)
            run.wait([0], "online", CONNECT_TIMEOUT)
            live_before = CpuSnapshot.take(server.pid, run.pids)
            run.send([1], "send", count=per_conv, first_n=0)
            live_sent = run.wait([1], "sent", TIMEOUT)[1]
            live_got = run.wait([0], "received", TIMEOUT)[0]
            live_after = CpuSnapshot.take(server.pid, run.pids)
            run.send([0], "offline")
            run.wait([0], "offline", CONNECT_TIMEOUT)
            run.send([1], "send", count=per_conv, first_n=per_conv)
            offline_sent = run.wait([1], "sent", TIMEOUT)[1]
            start = time.monotonic_ns() + START_DELAY_NS
            run.send([0], "catchup", start_ns=start, expected=expected)
            run.pump_until(start)
            before = CpuSnapshot.take(server.pid, run.pids)
            current = run.wait([0], "current", TIMEOUT)[0]
            after = CpuSnapshot.take(server.pid, run.pids)
            server.check_alive()
            memory = server.memory_kib()
            results = run.results()
    device_result: dict[str, Any] = results[0]["result"]
    catchup_s = max(int(current["done_ns"]) - start, 1) / 1e9
    caught_up = int(current["caught_up"])
    cpu = _cpu(before, after)
    live_cpu = _cpu(live_before, live_after)
    live_s = max(int(live_got["last_ns"]) - live_before.t_ns, 1) / 1e9
    pages = stats.latency_summary_us(device_result["page_latency_ns"])
    live_latency = stats.latency_summary_us(array("q", device_result["live_latency_ns"]))
    cpu_per = _per(cpu, caught_up)
    live_per = _per(live_cpu, live_messages)
    figures: dict[str, Figure] = {
        "throughput": round(caught_up / catchup_s, 1),
        "units": caught_up,
        "catchup_time_s": round(catchup_s, 3),
        "conversations": convs,
        "pages": int(current["pages"]),
        "latency_samples": pages["count"],
        "latency_p50_us": pages["p50_us"],
        "latency_p99_us": pages["p99_us"],
        "latency_p999_us": pages["p999_us"],
        "latency_max_us": pages["max_us"],
        "server_cpu_s": None if cpu is None else round(cpu, 3),
        "server_cpu_util": None if cpu is None else round(cpu / catchup_s, 3),
        "server_cpu_us_per_unit": cpu_per,
        "server_peak_rss_mib": None if memory is None else round(memory["VmHWM"] / 1024, 1),
        "other_cpu_util": _other(before, after, cpu),
        "live_throughput": round(live_messages / live_s, 1),
        "live_cpu_us_per_message": live_per,
        "live_latency_p50_us": live_latency["p50_us"],
        "live_latency_p99_us": live_latency["p99_us"],
        "live_other_cpu_util": _other(live_before, live_after, live_cpu),
        "catchup_to_live_cpu": None
        if cpu_per is None or not live_per
        else round(cpu_per / live_per, 3),
    }
    correctness = {
        "expected": 2 * live_messages,
        "sent": int(live_sent["sent"]) + int(offline_sent["sent"]),
        "acked": int(live_sent["acked"]) + int(offline_sent["acked"]),
        "send_errors": int(live_sent["errors"]) + int(offline_sent["errors"]),
        "live_received": int(live_got["received"]),
        "caught_up": caught_up,
        "received": caught_up,
        "lost": int(current["lost"]),
        "duplicated": int(current["duplicated"]),
        "unexpected": int(current["unexpected"]),
        "redeliveries": int(current["redeliveries"]),
        "offline_sync_redeliveries": int(current["offline_sync_redeliveries"]),
    }
    ok = (
        correctness["sent"] == correctness["acked"] == 2 * live_messages
        and correctness["send_errors"] == 0
        and correctness["lost"] == correctness["duplicated"] == correctness["unexpected"] == 0
        and caught_up == live_messages
    )
    notes = []
    if isinstance(figures["other_cpu_util"], float) and figures["other_cpu_util"] >= 0.1:
        notes.append(
            f"other processes used {figures['other_cpu_util']:.2f} CPUs during the catch-up: "
            "these figures are disturbed"
        )
    return CaseResult(
        unit="msg",
        figures=figures,
        correctness=correctness,
        ok=ok,
        params={"conversations": convs, "per_conversation": per_conv, "window": window},
        server=server.as_json(),
        notes=notes,
    )


@register("catchup", "a device offline across many messages in many conversations catches up")
def catchup_cases(options: Options) -> list[Case]:
    return [
        Case(
            "rivet",
            "device offline across N x M messages in N single chats; paged sync until current",
            _catchup,
        )
    ]
