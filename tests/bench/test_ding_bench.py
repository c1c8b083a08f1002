"""CI's smoke run of the DING scenario: ``python -m bench ding --tiny`` works end to end.

Starts Rivet as a user would (``rivet users bulk``, ``rivet serve`` with a config file),
creates 200 DINGs whose SMS steps fall due a few seconds later, restarts the server while
they are pending, and waits for the hand-over. Asserts correctness only: every due step
reached the outbox provider exactly once by idempotency key (0 lost, 0 duplicated) and
reads ``sent``; never speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_DINGS = 200  # bench/scenarios/ding.py


def test_g1_tiny_pending_dings_are_handed_over_exactly_once(tmp_path: Path) -> None:
    out = tmp_path / "ding.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "ding", "--tiny", "--no-progress", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["scenario"] == "ding" and doc["ok"] is True
    (case,) = doc["cases"]
    assert case["name"] == "pending"
    c = case["runs"][0]["correctness"]
    assert c["created"] == c["due_steps"] == c["received"] == TINY_DINGS
    assert c["lost"] == c["duplicated"] == c["unexpected"] == c["corrupt"] == 0
    assert c["failed"] == 0 and c["errors"] == []
    assert c["outbox_records"] == TINY_DINGS
    assert c["listed"] == TINY_DINGS and c["sms_states"] == {"sent": TINY_DINGS}
    assert c["restarted"] is True
