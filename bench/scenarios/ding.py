"""``ding``: 100,000 pending DINGs with escalation (G1-G3, issue 4; the ``ding`` bullet of
issue 6).

Case ``pending`` (Rivet only: there is no bare counterpart). Rivet as a user runs it: ``rivet
serve`` on SQLite (``synchronous=FULL``) on a fresh copy of a data directory made with
``rivet users bulk``, the default Notifier (the outbox file, read back with ``rivet
outbox``), and a TOML config (``--config``) that lifts the C2 DING limits (per sender and
per recipient) and the personal SMS allowance (G2) above the offered load: they are still
checked on every DING. ``S`` senders (``--connections``, default 50, ``--tiny`` 4) each own
a group with 20 recipients of their own (``--tiny`` 5), made through the server; the
recipients never connect, so nothing is confirmed.

1. **create**: ``N`` DINGs (``--dings``, default 100,000, ``--tiny`` 200), shared by the
   senders, ``--window`` (8) ``ding.send`` in flight per sender, one recipient each, with a
   plan of one SMS step. Every SMS step falls due at the same wall-clock instant,
   ``--due-after`` seconds after the first DING is sent (each DING's ``sms_after_s`` is
   chosen for it, at least 1 s; whole seconds after the DING's creation, so the due times
   spread over a second or two); default 40 s plus 1 s per 600 DINGs, long enough on this
   machine for every DING to be pending, and the server restarted, before any falls due.
   ``--due-spread S`` spreads the due times evenly over ``S`` seconds instead, so that they
   fall due at a rate the server keeps up with and lateness measures the timers rather than
   a backlog. Figures: DINGs created per second (first send to last ack), the
   ``ding.send`` round trip, server CPU per DING, the server's RSS idle (senders connected,
   groups made) and once every DING is pending, and the difference per pending DING.
2. **restart** (when at least ``RESTART_MARGIN`` is left before the steps fall due): SIGTERM
   to the server's pid, then ``rivet serve`` again on the same data directory and port.
   ``restart_s`` is the time from the new process's start until it prints that it is
   listening, which it does only after the DING scheduler has loaded every pending step
   into its heap (``server/app.py`` starts the DING runtime, whose ``Scheduler.run`` loads
   before reporting started, before it listens); ``cold_start_s`` is the same time for the
   first start, on the same data without DINGs. RSS after the restart (before any client
   connects), and per pending DING over the first start's RSS at the same point.
3. **escalation**: from the due instant until the outbox holds an SMS record for every
   DING. Units are steps handed to the provider: throughput from the first due time to the
   last record, lateness per step (the record's ``time``, when the outbox provider accepted
   it, minus the step's ``due_at`` from the ``ding.send`` reply; both the server's wall
   clock in ms) as p50/p99/p999, server CPU per step. Correctness: the outbox records (read
   with ``rivet outbox --kind sms``) counted by idempotency key, one per DING: ``lost`` and
   ``duplicated`` must be 0; and every SMS step reads ``sent`` in its sender's
   ``ding.sent`` list. The server's OS thread count (``/proc/<pid>/status``) is reported
   idle, with every DING pending and at its peak during the escalation (no thread, or task,
   per DING: the heap and its one task are not visible from outside).

The restart needs a server we start: this scenario cannot use ``--url``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import stats
from bench.context import CaseResult, Figure, Options, Progress, RunContext
from bench.harness import CpuSnapshot, ServerError, ServerHandle, free_port, start_server
from bench.loadgen import LoadRun, WorkerSpec
from bench.patterns import START_DELAY_NS, split
from bench.rivet_server import ROOT, User, create_group, read_users, rivet_spec, template_for
from bench.scenarios import Case, register
from bench.scenarios._rivet import removed_unless_failed

DINGS = (100_000, 200)
SENDERS = (50, 4)
RECIPIENTS_PER_SENDER = (20, 5)
WINDOW = 8
#: The earliest a step may fall due after its DING (``sms_after_s``, whole seconds).
MIN_DELAY_S = 1
#: Default ``--due-after``: this many seconds, plus the DINGs at ``DUE_RATE_FLOOR`` per
#: second (a creation rate this machine beats), so that every DING is pending and the
#: server restarted before the steps fall due.
DUE_BASE_S = (40.0, 10.0)
DUE_RATE_FLOOR = 600.0
#: Seconds that must be left before the due instant to restart the server.
RESTART_MARGIN_S = 3.0
CONNECT_TIMEOUT = 120.0
SETTLE_S = 2.0
POLL_S = 0.2
KEY = re.compile(r"^rivet-ding-x(\d+)-s(\d+)-(\d+)$")


def _config(path: Path, dings: int) -> Path:
    """The C2 DING limits and the personal SMS allowance above the offered load."""
    path.write_text(
        "# python -m bench ding: limits above the offered load (still checked)\n"
        "ding_rate_per_second = 1000000.0\n"
        "ding_burst = 1000000\n"
        "ding_recipient_per_minute = 60000000.0\n"
        "ding_recipient_burst = 1000000\n"
        f"ding_personal_sms_per_month = {max(dings, 10) * 2}\n"
    )
    return path


def _threads(pid: int | None) -> int | None:
    if pid is None:
        return None
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return None


def _rss_kib(server: ServerHandle) -> int | None:
    memory = server.memory_kib()
    return None if memory is None else memory["VmRSS"]


class _OutboxWatch:
    """Counts the SMS records appended to the outbox file (progress only; the figures come
    from ``rivet outbox``)."""

    NEEDLE = b'"kind":"sms"'

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rest = b""
        self.count = 0

    def poll(self) -> int:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
            self.offset += len(data)
            data = self.rest + data
            cut = data.rfind(b"\n") + 1
            self.rest = data[cut:]
            self.count += data[:cut].count(self.NEEDLE)
        return self.count


def _read_outbox(data_dir: Path) -> list[dict[str, Any]]:
    """``rivet outbox --kind sms``, as an operator reads it."""
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "server.cli", "outbox"),
            *("--data-dir", str(data_dir), "--kind", "sms"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise ServerError(f"rivet outbox failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


class _ProgressTo:
    """Forwards the workers' progress to the bar of the phase running now."""

    def __init__(self) -> None:
        self.bar: Progress | None = None

    def __call__(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done)


def _due_after(ctx: RunContext, dings: int) -> float:
    if ctx.options.due_after is not None:
        return ctx.options.due_after
    base = ctx.pick(None, *DUE_BASE_S)
    return base + dings / DUE_RATE_FLOOR


def _pending(ctx: RunContext) -> CaseResult:
    if ctx.options.url:
        raise ServerError("the ding scenario restarts its server: it cannot use --url")
    o = ctx.options
    n = ctx.pick(o.dings, *DINGS)
    n_senders = max(1, min(ctx.pick(o.connections, *SENDERS), n))
    per_sender = ctx.pick(None, *RECIPIENTS_PER_SENDER)
    window = ctx.pick(o.window, WINDOW, WINDOW)
    due_after = _due_after(ctx, n)
    due_spread = o.due_spread or 0.0
    users_n = n_senders * (1 + per_sender)
    workdir = Path(tempfile.mkdtemp(prefix="rivet-bench-ding-"))
    data_dir = workdir / "data"
    config = _config(workdir / "rivet.toml", n)
    spec = rivet_spec(
        "rivet-ding",
        users=users_n,
        group_members=per_sender + 1,
        connections=n_senders,
        extra=("--config", str(config)),
    )
    spec = dataclasses.replace(spec, ready_timeout=300.0)
    users = read_users(template_for(users_n) / "users.jsonl")
    senders, recipients = users[:n_senders], users[n_senders:]
    groups: list[list[User]] = [
        recipients[i * per_sender : (i + 1) * per_sender] for i in range(n_senders)
    ]
    counts = [count for _first, count in split(n, n_senders)]
    data_dir.mkdir()
    assert spec.prepare is not None
    spec.prepare(data_dir)
    port = free_port()
    workers = ctx.workers(n_senders)
    with removed_unless_failed(workdir, "the ding scenario"), contextlib.ExitStack() as outer:
        first = contextlib.ExitStack()
        outer.callback(first.close)
        began = time.monotonic()
        server = first.enter_context(
            start_server(spec, ctx.cpu_plan.server, port=port, workdir=workdir)
        )
        cold_start_s = time.monotonic() - began
        cold_rss = _rss_kib(server)
        for owner, members in zip(senders, groups, strict=True):
            create_group(server.url, owner, [m.user_id for m in members], f"ding-{owner.user_id}")
        specs = [
            WorkerSpec(
                index=i,
                role="senders",
                workload="bench.ding_workloads:senders",
                url=server.url,
                params={
                    "senders": [
                        [
                            senders[k].user_id,
                            senders[k].access_token,
                            [m.user_id for m in groups[k]],
                            counts[k],
                        ]
                        for k in range(first_k, first_k + count)
                    ],
                    "window": window,
                    "min_delay_s": MIN_DELAY_S,
                    "connect_timeout": CONNECT_TIMEOUT,
                },
                cpus=ctx.cpu_plan.load,
            )
            for i, (first_k, count) in enumerate(split(n_senders, workers))
        ]
        progress = _ProgressTo()
        run = outer.enter_context(
            LoadRun(specs, on_progress=progress, start_timeout=CONNECT_TIMEOUT)
        )
        run.ready()
        idle_rss = _rss_kib(server)
        idle_threads = _threads(server.pid)
        # 1. create
        start = time.monotonic_ns() + START_DELAY_NS
        due_at_ms = int(time.time() * 1000 + (START_DELAY_NS / 1e6) + due_after * 1000)
        bar = ctx.progress("ding: create", n, None)
        progress.bar = bar
        run.send(
            run.indices,
            "go",
            due_at_ms=due_at_ms,
            due_spread_ms=int(due_spread * 1000),
            start_ns=start,
        )
        run.pump_until(start)
        before = CpuSnapshot.take(server.pid, run.pids)
        try:
            created = run.wait(run.indices, "created", 60.0 + n / 20)
        finally:
            bar.close()
        after = CpuSnapshot.take(server.pid, run.pids)
        pending_rss = _rss_kib(server)
        pending_threads = _threads(server.pid)
        # 2. restart, while every step is pending
        left_s = due_at_ms / 1000 - time.time()
        restart: dict[str, Figure] = {}
        if left_s > RESTART_MARGIN_S + cold_start_s:
            run.send(run.indices, "disconnect")
            run.wait(run.indices, "disconnected", CONNECT_TIMEOUT)
            began = time.monotonic()
            status = server.terminate()
            restart["stop_s"] = round(time.monotonic() - began, 3)
            if status != 0:
                raise ServerError(f"rivet serve exited with {status} after SIGTERM")
            first.close()
            began = time.monotonic()
            server = outer.enter_context(
                start_server(spec, ctx.cpu_plan.server, port=port, workdir=workdir)
            )
            restart["restart_s"] = round(time.monotonic() - began, 3)
            restart_rss = _rss_kib(server)
            restart["rss_restart_mib"] = _mib(restart_rss)
            restart["rss_per_pending_after_restart_b"] = _per(restart_rss, cold_rss, n)
            restart["threads_restart"] = _threads(server.pid)
            restart["due_left_at_restart_s"] = round(due_at_ms / 1000 - time.time(), 1)
        else:
            run.send(run.indices, "disconnect")
            run.wait(run.indices, "disconnected", CONNECT_TIMEOUT)
        run.send(run.indices, "reconnect")
        run.wait(run.indices, "reconnected", CONNECT_TIMEOUT)
        # 3. escalation
        watch = _OutboxWatch(data_dir / "outbox.jsonl")
        due_mono_ns = time.monotonic_ns() + int((due_at_ms - time.time() * 1000) * 1e6)
        run.pump_until(due_mono_ns)
        esc_before = CpuSnapshot.take(server.pid, run.pids)
        bar = ctx.progress("ding: escalation", n, None)
        deadline = time.monotonic() + 120.0 + n / 20
        peak_threads = _threads(server.pid) or 0
        try:
            while watch.poll() < n and time.monotonic() < deadline:
                bar.update(watch.count)
                server.check_alive()
                peak_threads = max(peak_threads, _threads(server.pid) or 0)
                run.pump_until(time.monotonic_ns() + int(POLL_S * 1e9))
        finally:
            bar.close()
        esc_after = CpuSnapshot.take(server.pid, run.pids)
        run.pump_until(time.monotonic_ns() + int(SETTLE_S * 1e9))
        server.check_alive()
        final_rss = _rss_kib(server)
        memory = server.memory_kib()
        records = _read_outbox(data_dir)
        run.send(run.indices, "verify")
        verified = run.wait(run.indices, "verified", 60.0 + n / 200)
        results = run.results()
    latencies = [
        d - b for r in results.values() for b, d in zip(r["sent"], r["received"], strict=True)
    ]
    return _result(
        n=n,
        n_senders=n_senders,
        per_sender=per_sender,
        window=window,
        workers=workers,
        due_after=due_after,
        due_spread=due_spread,
        created=created,
        create_window=(before, after),
        escalation_window=(esc_before, esc_after),
        send_rtt_ns=latencies,
        records=records,
        verified=verified,
        rss={"cold": cold_rss, "idle": idle_rss, "pending": pending_rss, "final": final_rss},
        peak_rss_kib=None if memory is None else memory["VmHWM"],
        threads={"idle": idle_threads, "pending": pending_threads, "peak": peak_threads},
        cold_start_s=cold_start_s,
        restart=restart,
        server=server,
    )


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def _per(kib: int | None, base_kib: int | None, n: int) -> float | None:
    if kib is None or base_kib is None or not n:
        return None
    return round((kib - base_kib) * 1024 / n, 1)


def _cpu(window: tuple[CpuSnapshot, CpuSnapshot]) -> tuple[float | None, float, float]:
    """Server CPU seconds, elapsed seconds, and CPUs used by other processes."""
    before, after = window
    cpu = None
    if before.server_s is not None and after.server_s is not None:
        cpu = after.server_s - before.server_s
    elapsed = max(after.t_ns - before.t_ns, 1) / 1e9
    other = (after.system_busy_s - before.system_busy_s) - (after.load_s - before.load_s)
    return cpu, elapsed, max(other - (cpu or 0.0), 0.0) / elapsed


def _result(
    *,
    n: int,
    n_senders: int,
    per_sender: int,
    window: int,
    workers: int,
    due_after: float,
    due_spread: float,
    created: dict[int, dict[str, Any]],
    create_window: tuple[CpuSnapshot, CpuSnapshot],
    escalation_window: tuple[CpuSnapshot, CpuSnapshot],
    send_rtt_ns: list[int],
    records: list[dict[str, Any]],
    verified: dict[int, dict[str, Any]],
    rss: dict[str, int | None],
    peak_rss_kib: int | None,
    threads: dict[str, int | None],
    cold_start_s: float,
    restart: dict[str, Figure],
    server: ServerHandle,
) -> CaseResult:
    due: dict[int, int] = {}
    for c in created.values():
        for number, due_at in c["dings"]:
            due[int(number)] = int(due_at)
    made = sum(int(c["created"]) for c in created.values())
    first_ns = min(int(c["first_ns"]) for c in created.values())
    last_ns = max(int(c["last_ns"]) for c in created.values())
    create_s = max(last_ns - first_ns, 1) / 1e9
    create_cpu, _create_elapsed, create_other = _cpu(create_window)
    rtt = stats.latency_summary_us(send_rtt_ns)
    # the outbox, by idempotency key
    per_key: Counter[str] = Counter()
    handed_at: dict[int, int] = {}
    unexpected = 0
    malformed = 0
    for record in records:
        key = str(record.get("idempotency_key", ""))
        match = KEY.match(key)
        if match is None:
            malformed += 1
            continue
        per_key[key] += 1
        number = int(match.group(1))
        if number not in due:
            unexpected += 1
            continue
        handed_at[number] = min(handed_at.get(number, 1 << 62), int(record["time"]))
    lost = sum(1 for number in due if number not in handed_at)
    duplicated = sum(count - 1 for count in per_key.values())
    late_ms = sorted(handed_at[number] - due[number] for number in handed_at)
    lateness = stats.latency_summary_us(ms * 1_000_000 for ms in late_ms)
    first_due = min(due.values()) if due else 0
    last_handed = max(handed_at.values()) if handed_at else first_due
    handed = len(handed_at)
    drain_s = max(last_handed - first_due, 1) / 1000
    esc_cpu, esc_elapsed, esc_other = _cpu(escalation_window)
    states: Counter[str] = Counter()
    for v in verified.values():
        states.update({k: int(c) for k, c in v["sms_states"].items()})
    listed = sum(int(v["listed"]) for v in verified.values())
    figures: dict[str, Figure] = {
        "throughput": round(handed / drain_s, 1),
        "units": handed,
        "latency_samples": lateness["count"],
        "latency_mean_us": lateness["mean_us"],
        "latency_p50_us": lateness["p50_us"],
        "latency_p99_us": lateness["p99_us"],
        "latency_p999_us": lateness["p999_us"],
        "latency_max_us": lateness["max_us"],
        "server_cpu_s": None if esc_cpu is None else round(esc_cpu, 3),
        "server_cpu_util": None if esc_cpu is None else round(esc_cpu / esc_elapsed, 3),
        "server_cpu_us_per_unit": None
        if esc_cpu is None or not handed
        else round(esc_cpu * 1e6 / handed, 1),
        "server_peak_rss_mib": _mib(peak_rss_kib),
        "escalation_drain_s": round(drain_s, 3),
        "due_spread_s": round((max(due.values()) - first_due) / 1000, 3) if due else None,
        "dings": made,
        "create_per_s": round(made / create_s, 1),
        "create_s": round(create_s, 3),
        "create_cpu_us_per_ding": None
        if create_cpu is None or not made
        else round(create_cpu * 1e6 / made, 1),
        "create_server_cpu_util": None if create_cpu is None else round(create_cpu / create_s, 3),
        "send_rtt_p50_us": rtt["p50_us"],
        "send_rtt_p99_us": rtt["p99_us"],
        "rss_cold_mib": _mib(rss["cold"]),
        "rss_idle_mib": _mib(rss["idle"]),
        "rss_pending_mib": _mib(rss["pending"]),
        "rss_per_pending_ding_b": _per(rss["pending"], rss["idle"], made),
        "rss_after_escalation_mib": _mib(rss["final"]),
        "cold_start_s": round(cold_start_s, 3),
        **restart,
        "threads_idle": threads["idle"],
        "threads_pending": threads["pending"],
        "threads_peak_escalation": threads["peak"],
        "create_other_cpu_util": round(create_other, 3),
        "other_cpu_util": round(esc_other, 3),
    }
    correctness: dict[str, Any] = {
        "dings": n,
        "created": made,
        "failed": sum(int(c["failed"]) for c in created.values()),
        "send_duplicates": sum(int(c["duplicates"]) for c in created.values()),
        "errors": [e for c in created.values() for e in c["errors"]],
        "due_steps": len(due),
        "received": handed,
        "outbox_records": len(records),
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "corrupt": malformed,
        "listed": listed,
        "sms_states": dict(states),
        "restarted": bool(restart),
    }
    ok = (
        made == n
        and len(due) == n
        and handed == n
        and lost == duplicated == unexpected == malformed == 0
        and listed == n
        and states.get("sent", 0) == n
    )
    notes = []
    if not restart:
        notes.append(
            "no restart: creation left too little time before the steps fell due "
            "(raise --due-after)"
        )
    if late_ms and late_ms[0] < 0:
        notes.append(f"a step was handed over {-late_ms[0]} ms before its due time")
    for label, other in (("creation", create_other), ("escalation", esc_other)):
        if other >= 0.1:
            notes.append(
                f"other processes used {other:.2f} CPUs during the {label}: figures disturbed"
            )
    if n < 1000:
        notes.append(f"only {n} steps: p999 is the maximum or close to it")
    return CaseResult(
        unit="step",
        figures=figures,
        correctness=correctness,
        ok=ok,
        params={
            "dings": n,
            "senders": n_senders,
            "recipients_per_sender": per_sender,
            "window": window,
            "workers": workers,
            "due_after_s": due_after,
            "due_spread_s": due_spread,
            "plan": "sms only (no call); recipients offline",
        },
        server=server.as_json(),
        notes=notes,
    )


@register("ding", "100,000 pending DINGs: created, restarted, escalated to SMS (G1-G3)")
def ding_cases(options: Options) -> list[Case]:
    return [
        Case(
            "pending",
            "N DINGs with an SMS step due at one instant; restart while pending; hand-over",
            _pending,
        )
    ]
