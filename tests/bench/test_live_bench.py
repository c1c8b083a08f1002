"""CI's smoke run of the live join storm: ``python -m bench live --tiny`` works end to end.

Asserts what the run reports (every viewer joined, every participant's last count is right,
no participant got more count events than the coalescing allows); never speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_VIEWERS = 20  # bench/scenarios/live.py


def test_l1_tiny_join_storm_reports_coalesced_counts(tmp_path: Path) -> None:
    out = tmp_path / "live.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "live", "--tiny", "--no-progress", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["scenario"] == "live" and doc["ok"] is True
    (case,) = doc["cases"]
    assert case["name"] == "join-storm"
    run = case["runs"][0]
    figures, correctness = run["figures"], run["correctness"]
    assert correctness["joined"] == TINY_VIEWERS and correctness["failed"] == 0
    assert correctness["final_viewer_counts"] == [TINY_VIEWERS]
    assert correctness["participants_without_counts"] == 0
    assert 1 <= figures["counts_max_per_participant"] <= figures["counts_allowed"]
    assert figures["throughput"] > 0 and figures["latency_samples"] == TINY_VIEWERS
    assert figures["latency_p50_us"] <= figures["latency_p99_us"]
