"""CI's smoke run of the harness: ``python -m bench baseline --tiny`` works end to end.

Asserts what the harness reports and that every message arrived exactly once; never speed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report

ROOT = Path(__file__).resolve().parents[2]
CASES = [
    "echo-plain",
    "echo-fast",
    "echo-transport",
    "broadcast-plain",
    "broadcast-fast",
    "connections",
]
# --tiny sizes (bench/scenarios/baseline.py)
ECHO_MESSAGES = 4 * 50
PUBLISHED, SUBSCRIBERS = 40, 8
STORM = 50


def _bench(*args: str, timeout: float = 50.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def tiny(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "baseline.json"
    proc = _bench("baseline", "--tiny", "--no-progress", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def _case(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(case for case in doc["cases"] if case["name"] == name)


def test_results_file_describes_the_run(tiny: tuple[Any, dict[str, Any]]) -> None:
    _, doc = tiny
    assert doc["scenario"] == "baseline"
    assert doc["ok"] is True
    assert [case["name"] for case in doc["cases"]] == CASES
    assert doc["machine"]["cpu_count"] >= 1
    assert doc["versions"]["trio"] and doc["versions"]["trio-websocket"]
    assert doc["parameters"]["tiny"] is True
    assert doc["pinning"]["note"]
    if len(os.sched_getaffinity(0)) >= 2:
        assert doc["pinning"]["server_cpus"] and doc["pinning"]["load_cpus"]
        assert not set(doc["pinning"]["server_cpus"]) & set(doc["pinning"]["load_cpus"])


@pytest.mark.parametrize("name", CASES)
def test_every_case_has_the_standard_figures(tiny: tuple[Any, dict[str, Any]], name: str) -> None:
    _, doc = tiny
    case = _case(doc, name)
    assert case["ok"] is True
    figures = case["runs"][0]["figures"]
    assert figures["throughput"] > 0
    for key in ("latency_p50_us", "latency_p99_us", "latency_p999_us"):
        assert figures[key] is not None and figures[key] > 0
    assert figures["latency_p50_us"] <= figures["latency_p99_us"] <= figures["latency_p999_us"]
    # Server accounting comes from /proc at tick resolution: present, not necessarily > 0.
    assert figures["server_cpu_us_per_unit"] is not None and figures["server_cpu_us_per_unit"] >= 0
    assert figures["server_peak_rss_mib"] > 0
    assert case["summary"]["throughput"]["n"] == 1
    assert case["runs"][0]["series"]["latency"], "no time series for the plots"


@pytest.mark.parametrize("name", ["echo-plain", "echo-fast", "echo-transport"])
def test_every_echo_came_back_exactly_once(tiny: tuple[Any, dict[str, Any]], name: str) -> None:
    _, doc = tiny
    c = _case(doc, name)["runs"][0]["correctness"]
    assert c["sent"] == ECHO_MESSAGES
    assert c["received"] == ECHO_MESSAGES
    assert (c["lost"], c["duplicated"], c["unexpected"], c["misrouted"], c["corrupt"]) == (
        0,
        0,
        0,
        0,
        0,
    )


@pytest.mark.parametrize("name", ["broadcast-plain", "broadcast-fast"])
def test_every_subscriber_got_every_broadcast_once(
    tiny: tuple[Any, dict[str, Any]], name: str
) -> None:
    _, doc = tiny
    run = _case(doc, name)["runs"][0]
    c = run["correctness"]
    assert c["published"] == PUBLISHED
    assert c["stalled"] is False
    assert c["sent"] == c["received"] == PUBLISHED * SUBSCRIBERS
    assert (c["lost"], c["duplicated"], c["unexpected"], c["corrupt"]) == (0, 0, 0, 0)
    assert c["acks"]["received"] == c["acks"]["sent"] == PUBLISHED
    assert c["acks"]["lost"] == c["acks"]["duplicated"] == 0
    assert run["figures"]["subscribers"] == SUBSCRIBERS
    assert run["figures"]["server_cpu_us_per_publish"] is not None


def test_connection_storm_opens_them_all(tiny: tuple[Any, dict[str, Any]]) -> None:
    _, doc = tiny
    run = _case(doc, "connections")["runs"][0]
    assert run["correctness"]["established"] == STORM
    assert run["correctness"]["failed"] == 0
    assert run["figures"]["accept_time_s"] > 0
    assert run["figures"]["rss_per_connection_kib"] is not None


def test_table_and_ratios_are_printed(tiny: tuple[Any, dict[str, Any]]) -> None:
    proc, doc = tiny
    for name in CASES:
        assert name in proc.stdout
    assert "ratios" in proc.stdout
    assert doc["pinning"]["note"] in proc.stdout
    pairs = {(r["case"], r["reference"]) for r in doc["ratios"]}
    assert pairs == {
        ("echo-fast", "echo-plain"),
        ("echo-transport", "echo-plain"),
        ("broadcast-fast", "broadcast-plain"),
    }
    # A tiny run may see no CPU tick (10 ms) at all, so a CPU ratio may be 0 or missing.
    assert all(r["ratio"] is None or r["ratio"] >= 0 for r in doc["ratios"])
    throughput = [r for r in doc["ratios"] if r["figure"] == "throughput"]
    assert len(throughput) == 3 and all(r["ratio"] > 0 for r in throughput)


def test_plots(tiny: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    _, doc = tiny
    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(report.PlotUnavailable, match=r"pip install -e '\.\[plot\]'"):
            report.write_plots(doc, tmp_path, "x")
        # The command line says so before running anything.
        proc = _bench("baseline", "--tiny", "--plot", "--json", str(tmp_path / "p.json"))
        assert proc.returncode == 2
        assert "matplotlib" in proc.stderr and ".[plot]" in proc.stderr
        assert not (tmp_path / "p.json").exists()
    else:
        written = report.write_plots(doc, tmp_path, "x")
        names = {p.name for p in written}
        assert {f"x-{case}.png" for case in CASES} | {"x-throughput.png"} == names
        assert all(p.stat().st_size > 0 for p in written)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = _bench("no-such-scenario", "--json", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and "no scenario" in proc.stderr
    proc = _bench("baseline", "--url", "ws://127.0.0.1:9", "--json", str(tmp_path / "x.json"))
    assert proc.returncode == 2 and "--case" in proc.stderr
    proc = _bench("baseline", "--messages", "5", "--duration", "1")
    assert proc.returncode == 2


def test_list_names_the_cases() -> None:
    proc = _bench("--list")
    assert proc.returncode == 0
    assert "baseline:" in proc.stdout
    for name in CASES:
        assert name in proc.stdout
