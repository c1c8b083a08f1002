"""The harness's pure parts: statistics, sequence tracking, flow control, registry, CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from bench import stats
from bench.context import Options
from bench.harness import (
    CpuPlan,
    ServerError,
    ServerSpec,
    read_cpu_seconds,
    read_memory_kib,
    start_server,
)
from bench.patterns import Load, split
from bench.runner import UsageError, select_cases
from bench.scenarios import Case, get, names, register
from bench.workloads import Probe, SeqTracker, _Gate, decode_probe, encode_probe, padding


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 1001))
    assert stats.percentile(values, 50) == 500
    assert stats.percentile(values, 99) == 990
    assert stats.percentile(values, 99.9) == 999
    assert stats.percentile(values, 100) == 1000
    assert stats.percentile([7], 99.9) == 7
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile(values, 101)


def test_latency_summary_in_microseconds() -> None:
    summary = stats.latency_summary_us(ns * 1000 for ns in range(1, 101))
    assert summary["count"] == 100
    assert summary["p50_us"] == 50.0
    assert summary["p99_us"] == 99.0
    assert summary["max_us"] == 100.0
    assert stats.latency_summary_us([])["p50_us"] is None


def test_time_series_buckets_by_receive_time() -> None:
    origin = 1_000_000_000
    received = [origin + 10_000_000, origin + 20_000_000, origin + 150_000_000]
    latency = [1000, 3000, 5000]
    series = stats.time_series(received, latency, origin, 0.1)
    assert [b["count"] for b in series] == [2, 1]
    assert series[0]["rate"] == 20.0
    assert series[1]["t_s"] == 0.1


def test_summaries_and_ratios() -> None:
    runs = [{"throughput": 100.0, "ok": True}, {"throughput": 120.0}, {"throughput": 110.0}]
    summary = stats.summarize_runs(runs)
    assert summary["throughput"] == {
        "median": 110.0,
        "min": 100.0,
        "max": 120.0,
        "n": 3,
        "spread_pct": 18.2,
    }
    assert "ok" not in summary  # booleans are not figures
    rows = stats.ratio_rows(
        "fast", summary, "plain", {"throughput": {"median": 55.0}}, ["throughput", "missing"]
    )
    assert rows == [
        {
            "case": "fast",
            "reference": "plain",
            "figure": "throughput",
            "value": 110.0,
            "reference_value": 55.0,
            "ratio": 2.0,
        }
    ]
    assert stats.ratio(1.0, 0) is None


def test_seq_tracker_counts_lost_duplicated_unexpected() -> None:
    tracker = SeqTracker()
    for seq in (0, 1, 1, 3, 500, 3):
        tracker.add(seq)
    assert tracker.unique == 4
    assert tracker.duplicates == 2
    assert tracker.missing(5) == 2  # 2 and 4
    assert tracker.unexpected(5) == 1  # 500


def test_probe_round_trip_and_padding() -> None:
    probe = Probe(3, 7, 123456789, padding(128))
    data = encode_probe(probe)
    assert abs(len(data) - 128) <= 16
    assert decode_probe(data) == probe


async def test_gate_holds_the_publisher_to_its_window() -> None:
    gate = _Gate(sources=2, window=2)
    assert await gate.wait(1, 1.0)  # 0 and 1 may go before anything is delivered
    passed = trio.Event()

    async def third() -> None:
        assert await gate.wait(2, 5.0)
        passed.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.sleep(0.05)
        gate.update(0, 1)
        await trio.sleep(0.05)
        assert not passed.is_set()  # the other subscriber worker has not got message 0
        gate.update(1, 1)
        with trio.fail_after(1):
            await passed.wait()
    assert not await gate.wait(10, 0.05)
    assert gate.stalled


def test_split_shares_evenly() -> None:
    assert split(10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert split(2, 4) == [(0, 1), (1, 1)]


def test_load_needs_messages_or_duration() -> None:
    with pytest.raises(ValueError):
        Load(4, None, None, 0.0, None, 1, 128, 1)
    with pytest.raises(ValueError):
        Load(4, 10, 1.0, 0.0, None, 1, 128, 1)


def test_registry() -> None:
    assert "baseline" in names()
    cases = get("baseline").build(Options(scenario="baseline"))
    assert {c.name: c.reference for c in cases}["echo-fast"] == "echo-plain"

    def build(options: Options) -> list[Case]:
        return []

    register("test-only-scenario", "a scenario registered by a test")(build)
    assert get("test-only-scenario").build is build
    with pytest.raises(ValueError):
        register("test-only-scenario", "twice")(lambda options: [])
    with pytest.raises(KeyError):
        get("no-such-scenario")


def test_case_selection_errors() -> None:
    with pytest.raises(UsageError, match="no case"):
        select_cases(Options(scenario="baseline", cases=("nope",)))
    with pytest.raises(UsageError, match="--case"):
        select_cases(Options(scenario="baseline", url="ws://127.0.0.1:9"))
    with pytest.raises(UsageError, match="ws://"):
        select_cases(Options(scenario="baseline", url="http://x", cases=("echo-plain",)))
    picked = select_cases(Options(scenario="baseline", cases=("connections",)))
    assert [c.name for c in picked] == ["connections"]


def test_proc_accounting_of_this_process() -> None:
    assert read_cpu_seconds(os.getpid()) > 0
    memory = read_memory_kib(os.getpid())
    assert memory["VmHWM"] >= memory["VmRSS"] > 0


def test_cpu_plan() -> None:
    assert CpuPlan.choose(pin=False).server is None
    plan = CpuPlan.choose()
    if len(os.sched_getaffinity(0)) >= 2:
        assert plan.server and plan.load and not set(plan.server) & set(plan.load)
    else:
        assert plan.server is None and "not pinned" in plan.note


def test_a_server_that_dies_at_start_is_reported_with_its_log(tmp_path: Path) -> None:
    spec = ServerSpec(
        "broken",
        ("{python}", "-c", "import sys; print('boom in {data_dir}'); sys.exit(3)"),
        ready_timeout=10,
    )
    with pytest.raises(ServerError, match="boom"), start_server(spec, workroot=tmp_path):
        pass
    (kept,) = tmp_path.iterdir()  # kept for a look at the log, as the warning says
    assert "boom" in (kept / "server.log").read_text()


def test_a_started_server_gets_a_fresh_data_dir_and_is_stopped(tmp_path: Path) -> None:
    script = (
        "import os, signal, socket, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
        "assert os.listdir(sys.argv[1]) == []\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[2]))); s.listen()\n"
        "time.sleep(60)\n"
    )
    spec = ServerSpec("sleeper", ("{python}", "-c", script, "{data_dir}", "{port}"))
    with start_server(spec, workroot=tmp_path) as server:
        assert server.pid is not None and server.log_path is not None
        assert server.url.startswith("ws://127.0.0.1:")
        workdir = server.log_path.parent
        assert workdir.is_dir()
        assert read_cpu_seconds(server.pid) >= 0
    assert not workdir.exists()  # a clean stop removes the data directory and the log
