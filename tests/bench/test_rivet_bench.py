"""CI's smoke runs of the Rivet scenarios: ``python -m bench SCENARIO --tiny`` end to end.

Each starts Rivet as a user would (``rivet users bulk``, then ``rivet serve`` on a copy of
that data directory), runs the tiny load beside its bare baseline, and must report every
message acknowledged and delivered exactly once (0 lost, 0 duplicated). Never speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ZERO = ("lost", "duplicated", "unexpected", "misrouted", "corrupt")


def _tiny(scenario: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{scenario}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", scenario, "--tiny", "--no-progress", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc: dict[str, Any] = json.loads(out.read_text())
    assert doc["scenario"] == scenario and doc["ok"] is True
    assert ("ratios" in proc.stdout) == bool(doc["ratios"])
    return doc


def _run(doc: dict[str, Any], case: str) -> dict[str, Any]:
    found = next(c for c in doc["cases"] if c["name"] == case)
    assert found["ok"] is True
    run: dict[str, Any] = found["runs"][0]
    figures = run["figures"]
    for key in ("throughput", "latency_p50_us", "latency_p99_us", "latency_p999_us"):
        assert figures[key] is not None and figures[key] > 0, key
    assert figures["server_cpu_us_per_unit"] is not None
    assert figures["server_peak_rss_mib"] > 0
    return run


def _zero(correctness: dict[str, Any], keys: tuple[str, ...] = ZERO) -> None:
    assert {k: correctness[k] for k in keys} == dict.fromkeys(keys, 0)


def test_direct(tmp_path: Path) -> None:
    doc = _tiny("direct", tmp_path)
    assert [c["name"] for c in doc["cases"]] == [
        "echo-plain",
        "echo-transport",
        "rivet",
        "relay",
        "relay-durable",
        "echo-plain-half",
        "rivet-half",
        "relay-durable-half",
    ]
    for case in ("rivet", "relay", "relay-durable", "rivet-half", "relay-durable-half"):
        c = _run(doc, case)["correctness"]
        _zero(c)
        assert c["sent"] == c["received"] == c["acked"] == 4 * 20
        assert c["unacked"] == c["ack_duplicated"] == c["ack_unexpected"] == 0
    half = _run(doc, "rivet-half")["figures"]
    assert half["offered_rate"] == _run(doc, "echo-plain-half")["figures"]["offered_rate"] > 0
    assert _run(doc, "relay-durable-half")["figures"]["offered_rate"] == half["offered_rate"]
    _zero(_run(doc, "echo-transport")["correctness"])
    pairs = {(r["case"], r["reference"]) for r in doc["ratios"]}
    assert pairs == {
        ("echo-transport", "echo-plain"),
        ("rivet", "echo-plain"),
        ("relay", "echo-plain"),
        ("relay-durable", "echo-plain"),
        ("rivet-half", "echo-plain-half"),
        ("relay-durable-half", "echo-plain-half"),
    }


def test_group(tmp_path: Path) -> None:
    doc = _tiny("group", tmp_path)
    run = _run(doc, "rivet-8")
    c = run["correctness"]
    _zero(c)
    assert c["published"] == 20 and c["stalled"] is False
    assert c["sent"] == c["received"] == 20 * 8
    assert c["acks"]["received"] == c["acks"]["sent"] == 20
    assert run["figures"]["group_members"] == 9
    pairs = {(r["case"], r["reference"]) for r in doc["ratios"]}
    assert ("rivet-8", "broadcast-plain-8") in pairs
    assert ("broadcast-fast-8", "broadcast-plain-8") in pairs


def test_connections(tmp_path: Path) -> None:
    doc = _tiny("connections", tmp_path)
    for case in ("bare", "rivet"):
        run = _run(doc, case)
        assert run["correctness"]["established"] == 20 and run["correctness"]["failed"] == 0
        assert run["figures"]["rss_per_connection_kib"] is not None
        assert run["figures"]["fd_limit"] > 0


def test_catchup(tmp_path: Path) -> None:
    doc = _tiny("catchup", tmp_path)
    run = _run(doc, "rivet")
    c = run["correctness"]
    assert c["lost"] == c["duplicated"] == c["unexpected"] == 0
    assert c["sent"] == c["acked"] == c["expected"] == 2 * 5 * 10
    assert c["caught_up"] == c["live_received"] == 5 * 10
    assert run["figures"]["pages"] >= 1
    assert run["figures"]["live_cpu_us_per_message"] is not None
    assert "catchup_to_live_cpu" in run["figures"]


@pytest.mark.slow
def test_storm(tmp_path: Path) -> None:
    doc = _tiny("storm", tmp_path)
    run = _run(doc, "rivet")
    c = run["correctness"]
    assert c["current"] == c["devices"] == 20 and c["failed"] == 0
    assert c["lost"] == c["duplicated"] == c["unexpected"] == 0
    assert c["sent"] == c["acked"] == 40
    assert c["redeliveries"] >= 0
    assert run["figures"]["accept_time_s"] > 0
    assert ("rivet", "bare") in {(r["case"], r["reference"]) for r in doc["ratios"]}
