"""Percentiles, time series, repetition summaries and ratio tables. Pure functions."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Number = int | float

PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p99", 99.0), ("p999", 99.9))


def percentile(sorted_values: Sequence[Number], pct: float) -> Number | None:
    """Nearest-rank percentile of already sorted values; ``None`` for no values."""
    if not sorted_values:
        return None
    if not 0.0 <= pct <= 100.0:
        raise ValueError(f"percentile {pct} is outside 0..100")
    # round() first: 99.9 / 100 * 1000 is 999.0000000000001 in binary floating point
    rank = max(math.ceil(round(pct / 100.0 * len(sorted_values), 9)), 1)
    return sorted_values[rank - 1]


def latency_summary_us(latencies_ns: Iterable[int]) -> dict[str, float | int | None]:
    """Count, mean, p50/p99/p999 and max of latencies given in ns, reported in µs."""
    ordered = sorted(latencies_ns)
    out: dict[str, float | int | None] = {"count": len(ordered)}
    if not ordered:
        out.update({"mean_us": None, "max_us": None, **{f"{k}_us": None for k, _ in PERCENTILES}})
        return out
    out["mean_us"] = round(sum(ordered) / len(ordered) / 1000, 1)
    for name, pct in PERCENTILES:
        value = percentile(ordered, pct)
        out[f"{name}_us"] = None if value is None else round(value / 1000, 1)
    out["max_us"] = round(ordered[-1] / 1000, 1)
    return out


def time_series(
    received_ns: Sequence[int], latency_ns: Sequence[int], origin_ns: int, bucket_s: float
) -> list[dict[str, float | int | None]]:
    """Per-bucket count, rate, p50/p99/max latency (µs), by receive time since ``origin_ns``."""
    if len(received_ns) != len(latency_ns):
        raise ValueError("received_ns and latency_ns differ in length")
    width = int(bucket_s * 1e9)
    buckets: dict[int, list[int]] = {}
    for t, lat in zip(received_ns, latency_ns, strict=True):
        buckets.setdefault((t - origin_ns) // width, []).append(lat)
    series: list[dict[str, float | int | None]] = []
    for key in sorted(buckets):
        values = sorted(buckets[key])
        p50, p99 = percentile(values, 50.0), percentile(values, 99.0)
        series.append(
            {
                "t_s": round(key * bucket_s, 3),
                "count": len(values),
                "rate": round(len(values) / bucket_s, 1),
                "p50_us": None if p50 is None else round(p50 / 1000, 1),
                "p99_us": None if p99 is None else round(p99 / 1000, 1),
                "max_us": round(values[-1] / 1000, 1),
            }
        )
    return series


def cpu_series(samples: Sequence[tuple[int, float]], origin_ns: int) -> list[dict[str, float]]:
    """Server CPU use (fraction of one core) between consecutive ``(t_ns, cpu_s)`` samples."""
    out: list[dict[str, float]] = []
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t1 > t0:
            out.append(
                {
                    "t_s": round((t1 - origin_ns) / 1e9, 3),
                    "cpu": round((c1 - c0) / ((t1 - t0) / 1e9), 3),
                }
            )
    return out


def summarize_runs(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Number | int]]:
    """Median, min, max and spread of every numeric figure over repetitions.

    ``spread_pct`` is (max - min) / median in percent, the figure to read for run-to-run
    noise. Figures missing or ``None`` in some run are summarized over the others.
    """
    names: list[str] = []
    for run in runs:
        for name, value in run.items():
            if _numeric(value) and name not in names:
                names.append(name)
    out: dict[str, dict[str, Number | int]] = {}
    for name in names:
        values = [run[name] for run in runs if _numeric(run.get(name))]
        median = statistics.median(values)
        lo, hi = min(values), max(values)
        entry: dict[str, Number | int] = {"median": median, "min": lo, "max": hi, "n": len(values)}
        if median:
            entry["spread_pct"] = round((hi - lo) / abs(median) * 100, 1)
        out[name] = entry
    return out


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def ratio(value: Number | None, reference: Number | None) -> float | None:
    """``value / reference``, or ``None`` when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def ratio_rows(
    case: str,
    summary: Mapping[str, Mapping[str, Number]],
    reference: str,
    reference_summary: Mapping[str, Mapping[str, Number]],
    figures: Sequence[str],
) -> list[dict[str, Any]]:
    """One row per figure present in both summaries: the medians and their ratio."""
    rows: list[dict[str, Any]] = []
    for figure in figures:
        if figure not in summary or figure not in reference_summary:
            continue
        value = summary[figure]["median"]
        ref = reference_summary[figure]["median"]
        r = ratio(value, ref)
        rows.append(
            {
                "case": case,
                "reference": reference,
                "figure": figure,
                "value": value,
                "reference_value": ref,
                "ratio": None if r is None else round(r, 3),
            }
        )
    return rows
