"""Smoke test of ``python -m bench.org_layout``: both layouts export exactly one organisation's
rows and a delete leaves none of them. Correctness only, never speed.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.org_layout import OrgFiles, SharedFile, Workload, marker

ROOT = Path(__file__).resolve().parents[2]
LAYOUTS = {"A", "B", "B2"}


def test_tiny_run_exports_right_rows_and_deletes_leave_none(tmp_path: Path) -> None:
    out = tmp_path / "org_layout.json"
    args = ["--orgs", "5", "--messages-per-org", "5", "--quiet"]
    args += ["--tmp-root", str(tmp_path), "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.org_layout", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "A: file per org" in proc.stdout
    doc = json.loads(out.read_text())
    (run,) = doc["runs"]
    exports = run["checks"]["exports"]
    assert {e["layout"] for e in exports} == LAYOUTS
    assert all(e["ok"] and e["rows"] == e["expected"] > 0 for e in exports)
    deletes = run["checks"]["deletes"]
    assert {d["layout"] for d in deletes} == LAYOUTS
    assert all(d["rows_left"] == 0 for d in deletes)
    figures = run["figures"]
    assert figures["A.copies_left"] == 0
    for shared in ("B", "B2"):
        # VACUUM rebuilds the file, the checkpoint truncates the WAL: no copy left in either.
        assert figures[f"{shared}.copies_left_after_vacuum"] == 0
    # The temporary directory is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["org_layout.json"]


def _exported(layout: OrgFiles | SharedFile, org: int) -> list[dict[str, Any]]:
    out = io.StringIO()
    layout.export(org, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("clustered", [False, True], ids=["B", "B2"])
def test_each_layout_exports_exactly_one_org_and_delete_leaves_no_row(
    tmp_path: Path, clustered: bool
) -> None:
    work = Workload(seed=7)
    messages, audits = work.seed_rows(orgs=3, per_org=4)
    extra = work.batch([0, 1, 2], 30)
    a = OrgFiles(tmp_path / "a", capacity=2)
    b = SharedFile(tmp_path / "b", clustered=clustered)
    try:
        for org in range(3):
            a.create(org, work.tick())
            b.create(org, work.tick())
            a.load(org, [m for m in messages if m[0] == org], [x for x in audits if x[0] == org])
        b.load(messages, audits)
        a.write(extra)
        b.write(extra)

        org = 1
        want_messages = sorted(m[1:] for m in messages + extra if m[0] == org)
        want_audits = sorted(x[1:] for x in audits if x[0] == org)
        for layout in (a, b):
            rows = _exported(layout, org)
            got_messages = sorted(
                (r["member"], r["conv"], r["ts"], r["body"]) for r in rows if r["t"] == "message"
            )
            got_audits = sorted(
                (r["actor"], r["ts"], r["action"], r["detail"]) for r in rows if r["t"] == "audit"
            )
            assert got_messages == want_messages
            assert got_audits == want_audits

        a.delete(org)
        b.delete(org)
    finally:
        a.close()
        b.close()

    assert not any(p.name.startswith(a.path(org).name) for p in a.root.iterdir())
    conn = sqlite3.connect(b.path)
    try:
        for table in ("messages", "audit", "organisations"):
            (n,) = conn.execute(f"SELECT count(*) FROM {table} WHERE org_id = ?", (org,)).fetchone()
            assert n == 0, table
        (others,) = conn.execute(
            "SELECT count(*) FROM messages WHERE org_id != ?", (org,)
        ).fetchone()
        assert others > 0
    finally:
        conn.close()
    # No byte of the deleted organisation's rows is left in A's remaining files.
    needle = marker(org).encode()
    assert all(needle not in p.read_bytes() for p in a.root.iterdir())
