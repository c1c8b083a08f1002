"""CI's smoke run of the flood scenario: ``python -m bench flood --tiny`` works end to end.

Asserts what the run reports (the flooder was refused and closed with 4051, every chat
message arrived exactly once in both cases); never speed: the p99 ratio is the bench's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_c2_tiny_flood_run_refuses_the_flooder_and_delivers_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "flood.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "flood", "--tiny", "--no-progress", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["scenario"] == "flood" and doc["ok"] is True
    cases = {case["name"]: case["runs"][0] for case in doc["cases"]}
    assert set(cases) == {"quiet", "flood"}
    for run in cases.values():
        c = run["correctness"]
        assert c["unacked"] == 0 and c["ack_duplicated"] == 0 and c["acked"] == c["sent"] > 0
    flood = cases["flood"]["figures"]
    assert flood["flood_frames"] > 0
    assert flood["flood_closes_4051"] >= 1 and flood["flood_rate_limited"] >= 1
    assert flood["p99_vs_quiet"] is not None and flood["p99_vs_quiet"] > 0
