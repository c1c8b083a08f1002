"""The results file (JSON), the printed table, ratios against references, and plots.

Plots need matplotlib, the optional ``plot`` extra (``pip install -e '.[plot]'``); it is
imported only when plots are asked for, and ``require_matplotlib`` says clearly when it is
missing.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from bench import stats

SCHEMA = 1
RATIO_FIGURES = (
    "throughput",
    "latency_p50_us",
    "latency_p99_us",
    "latency_p999_us",
    "server_cpu_us_per_unit",
    "server_peak_rss_mib",
    "accept_time_s",
    "rss_per_connection_kib",
)
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("throughput", "per s"),
    ("latency_p50_us", "p50 µs"),
    ("latency_p99_us", "p99 µs"),
    ("latency_p999_us", "p999 µs"),
    ("server_cpu_us_per_unit", "CPU µs/unit"),
    ("server_cpu_util", "srv busy"),
    ("server_peak_rss_mib", "peak RSS MiB"),
)
EXTRA_FIGURES = (
    "connections",
    "subscribers",
    "publishes_per_s",
    "ack_latency_p50_us",
    "ack_latency_p99_us",
    "server_cpu_us_per_publish",
    "accept_time_s",
    "rss_per_connection_kib",
    "server_rss_before_mib",
    "server_rss_after_mib",
    "window_s",
    "offered_rate",
    "group_members",
    "catchup_time_s",
    "pages",
    "live_throughput",
    "live_cpu_us_per_message",
    "live_latency_p99_us",
    "catchup_to_live_cpu",
    "fd_limit",
    "dings",
    "create_per_s",
    "create_cpu_us_per_ding",
    "send_rtt_p99_us",
    "rss_idle_mib",
    "rss_pending_mib",
    "rss_per_pending_ding_b",
    "cold_start_s",
    "restart_s",
    "rss_restart_mib",
    "rss_per_pending_after_restart_b",
    "escalation_drain_s",
    "threads_idle",
    "threads_peak_escalation",
)


def plural(unit: str) -> str:
    return unit[:-1] + "ies" if unit.endswith("y") else unit + "s"


class PlotUnavailable(RuntimeError):
    pass


def require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed; install the optional extra "
            "with: pip install -e '.[plot]'  (or run without --plot)"
        )


# --- the results document ------------------------------------------------------------------


def case_entry(
    name: str, description: str, reference: str | None, runs: Sequence[Any]
) -> dict[str, Any]:
    """One case's results: every run, and the median/spread summary of its figures."""
    as_json = [run.as_json() for run in runs]
    return {
        "name": name,
        "description": description,
        "reference": reference,
        "unit": as_json[0]["unit"] if as_json else None,
        "ok": all(run["ok"] for run in as_json),
        "summary": stats.summarize_runs([run["figures"] for run in as_json]),
        "runs": as_json,
    }


def find_reference_file(scenario: str, out_dir: Path) -> Path | None:
    candidates = sorted(out_dir.glob(f"{scenario}-*.json"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def compute_ratios(
    doc: Mapping[str, Any], out_dir: Path, against: str | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Ratio rows for every case with a reference, and notes on references not found."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    here = {case["name"]: case for case in doc["cases"]}
    files: dict[str, dict[str, Any] | None] = {}
    for case in doc["cases"]:
        ref = case["reference"]
        if not ref:
            continue
        if ":" not in ref and ref not in here:
            ref = f"{doc['scenario']}:{ref}"  # not run this time: the newest results file
        if ":" in ref:
            scenario, ref_case = ref.split(":", 1)
            if scenario not in files:
                files[scenario] = _load_reference(scenario, out_dir, against, notes)
            other = files[scenario]
            target, label = None, ref
            if other is not None:
                target = next((c for c in other["cases"] if c["name"] == ref_case), None)
                label = f"{ref} ({Path(other['path']).name})"
        else:
            target, label = here[ref], ref
        if target is None:
            notes.append(f"{case['name']}: reference {ref} not found, no ratios")
            continue
        rows.extend(
            stats.ratio_rows(case["name"], case["summary"], label, target["summary"], RATIO_FIGURES)
        )
    return rows, notes


def _load_reference(
    scenario: str, out_dir: Path, against: str | None, notes: list[str]
) -> dict[str, Any] | None:
    path = Path(against) if against else find_reference_file(scenario, out_dir)
    if path is None:
        notes.append(f"no {scenario}-*.json in {out_dir}; run `python -m bench {scenario}` first")
        return None
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        notes.append(f"cannot read reference file {path}: {exc}")
        return None
    if loaded.get("scenario") != scenario:
        notes.append(f"{path} holds scenario {loaded.get('scenario')!r}, not {scenario!r}")
        return None
    loaded["path"] = str(path)
    return loaded


def write_json(doc: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)


# --- the printed table ---------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if value else "0"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cell(summary: Mapping[str, Mapping[str, Any]], figure: str, repeats: int) -> str:
    entry = summary.get(figure)
    if entry is None:
        return "-"
    text = _fmt(entry["median"])
    if figure == "server_cpu_util":
        text = f"{entry['median']:.0%}"
    if repeats > 1 and entry.get("spread_pct") is not None:
        text += f" ±{entry['spread_pct'] / 2:.0f}%"
    return text


def _verdict(case: Mapping[str, Any]) -> str:
    bad = [run for run in case["runs"] if not run["ok"]]
    if not bad:
        total = sum(_received(run["correctness"]) for run in case["runs"])
        return f"yes ({total:,})"
    c = bad[0]["correctness"]
    parts = [f"{k} {v}" for k, v in c.items() if isinstance(v, int) and v and k in _BAD_KEYS]
    return "NO: " + (", ".join(parts) or "see correctness")


_BAD_KEYS = ("lost", "duplicated", "unexpected", "misrouted", "corrupt", "failed")


def _received(correctness: Mapping[str, Any]) -> int:
    for key in ("received", "established"):
        if isinstance(correctness.get(key), int):
            return int(correctness[key])
    return 0


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    all_rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(all_rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def render(doc: Mapping[str, Any]) -> str:
    repeats = int(doc["parameters"]["repeat"])
    lines = [
        f"scenario {doc['scenario']}  ({repeats} run{'s' if repeats > 1 else ''} per case"
        + (", median ±half the min–max spread" if repeats > 1 else "")
        + ")",
        f"pinning: {doc['pinning']['note']}",
        f"machine: {doc['machine']['cpu_model']}, {doc['machine']['cpu_count']} CPUs, "
        f"Python {doc['versions']['python']}, trio {doc['versions']['trio']}, "
        f"trio-websocket {doc['versions']['trio-websocket']}",
        "",
    ]
    headers = ["case", "unit", *(label for _, label in TABLE_COLUMNS), "exactly once"]
    rows = []
    for case in doc["cases"]:
        rows.append(
            [
                case["name"],
                case["unit"] or "-",
                *(_cell(case["summary"], fig, repeats) for fig, _ in TABLE_COLUMNS),
                _verdict(case),
            ]
        )
    lines += _table(headers, rows)
    extra_lines = []
    for case in doc["cases"]:
        extras = [
            f"{fig}={_cell(case['summary'], fig, repeats)}"
            for fig in EXTRA_FIGURES
            if fig in case["summary"]
        ]
        if extras:
            extra_lines.append(f"  {case['name']}: " + ", ".join(extras))
    if extra_lines:
        lines += ["", "other figures:", *extra_lines]
    if doc.get("ratios"):
        lines += ["", "ratios (case median / reference median):"]
        lines += _table(
            ["case", "reference", "figure", "value", "reference", "ratio"],
            (
                [
                    r["case"],
                    r["reference"],
                    r["figure"],
                    _fmt(r["value"]),
                    _fmt(r["reference_value"]),
                    "-" if r["ratio"] is None else f"{r['ratio']:.2f}×",
                ]
                for r in doc["ratios"]
            ),
        )
    notes = [f"  {case['name']}: {note}" for case in doc["cases"] for note in _case_notes(case)]
    notes += [f"  {note}" for note in doc.get("notes", [])]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def _case_notes(case: Mapping[str, Any]) -> list[str]:
    runs = case["runs"]
    if len(runs) == 1:
        return list(runs[0]["notes"])
    return [f"run {n}: {note}" for n, run in enumerate(runs, 1) for note in run["notes"]]


def print_report(doc: Mapping[str, Any], stream: TextIO) -> None:
    print(render(doc), file=stream)


# --- plots ---------------------------------------------------------------------------------


def write_plots(doc: Mapping[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """One PNG per case (latency, throughput and server CPU over time, first run) and one
    throughput summary; returns the paths written."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for case in doc["cases"]:
        run = case["runs"][0]
        series = run["series"]
        lat = series.get("latency") or []
        if not lat:
            continue
        fig, (ax_lat, ax_rate, ax_cpu) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
        t = [b["t_s"] for b in lat]
        for key, label in (("p50_us", "p50"), ("p99_us", "p99"), ("max_us", "max")):
            ax_lat.plot(t, [b[key] for b in lat], label=label, linewidth=1)
        ax_lat.set_yscale("log")
        ax_lat.set_ylabel("latency (µs)")
        ax_lat.legend(loc="upper right")
        ax_rate.plot(t, [b["rate"] for b in lat], linewidth=1)
        ax_rate.set_ylabel(f"{plural(case['unit'])} / s")
        cpu = series.get("server_cpu") or []
        if cpu:
            ax_cpu.plot([c["t_s"] for c in cpu], [c["cpu"] * 100 for c in cpu], linewidth=1)
        ax_cpu.set_ylabel("server CPU (% of a core)")
        ax_cpu.set_xlabel("seconds since start")
        start, until = series.get("window_from_s"), series.get("window_until_s")
        if start is not None and until is not None:
            for ax in (ax_lat, ax_rate, ax_cpu):
                ax.axvspan(start, until, color="tab:green", alpha=0.08)
        fig.suptitle(f"{doc['scenario']} / {case['name']}: {case['description']}")
        fig.tight_layout()
        path = out_dir / f"{stem}-{case['name']}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    cases = [c for c in doc["cases"] if "throughput" in c["summary"]]
    if cases:
        thr = [c["summary"]["throughput"] for c in cases]
        medians = [t["median"] for t in thr]
        errors = [[t["median"] - t["min"] for t in thr], [t["max"] - t["median"] for t in thr]]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.bar(range(len(cases)), medians, yerr=errors, capsize=4)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([f"{c['name']}\n({plural(c['unit'])}/s)" for c in cases], fontsize=8)
        ax.set_ylabel("throughput (median, min–max)")
        ax.set_title(f"{doc['scenario']}: throughput per case")
        fig.tight_layout()
        path = out_dir / f"{stem}-throughput.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
