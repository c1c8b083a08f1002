"""Run a scenario's cases, repeated and interleaved, and build the results document."""

from __future__ import annotations

import datetime
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from bench import report
from bench.context import CaseResult, Options, RunContext
from bench.harness import CpuPlan, machine_info, pinned, versions, wait_for_idle
from bench.scenarios import Case, get

RESULTS_DIR = Path(__file__).resolve().parent / "results"


class UsageError(ValueError):
    """The options do not fit the scenario."""


def select_cases(options: Options) -> list[Case]:
    try:
        scenario = get(options.scenario)
    except KeyError as exc:
        raise UsageError(exc.args[0]) from None
    if options.url:
        parts = urlsplit(options.url)
        if parts.scheme != "ws" or parts.port is None or not parts.hostname:
            raise UsageError(f"--url must look like ws://127.0.0.1:PORT, not {options.url!r}")
    cases = scenario.build(options)
    if options.cases:
        known = {case.name for case in cases}
        unknown = [name for name in options.cases if name not in known]
        if unknown:
            raise UsageError(
                f"no case {', '.join(unknown)} in {options.scenario}; known: {', '.join(known)}"
            )
        cases = [case for case in cases if case.name in options.cases]
    if options.url and len(cases) > 1:
        raise UsageError("--url targets one server: pick one case with --case")
    if options.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    return cases


def _one_line(name: str, result: CaseResult) -> str:
    f = result.figures
    thr = f.get("throughput")
    p99 = f.get("latency_p99_us")
    cpu = f.get("server_cpu_us_per_unit")
    return (
        f"  {name}: {thr if thr is not None else '-'} {result.unit}/s, p99 "
        f"{p99 if p99 is not None else '-'} µs, server CPU {cpu if cpu is not None else '-'} "
        f"µs/{result.unit}, exactly once: {'yes' if result.ok else 'NO'}"
    )


def run(options: Options, log: TextIO = sys.stderr) -> dict[str, Any]:
    """Run ``options.scenario``; returns the results document (also written as JSON)."""
    cases = select_cases(options)
    if options.plot:
        report.require_matplotlib()
    plan = CpuPlan.choose(options.pin, external=options.url is not None)
    out_dir = options.out_dir or RESULTS_DIR
    started = datetime.datetime.now(datetime.UTC)
    print(f"bench {options.scenario}: {plan.note}", file=log, flush=True)
    runs: dict[str, list[CaseResult]] = {case.name: [] for case in cases}
    with pinned(plan.load):
        for rep in range(options.repeat):
            for case in cases:
                print(
                    f"[{rep + 1}/{options.repeat}] {case.name}: {case.description}",
                    file=log,
                    flush=True,
                )
                if options.wait_idle > 0:
                    idle, busy = wait_for_idle(options.wait_idle)
                    if not idle:
                        print(
                            f"  the machine is still busy ({busy:.2f} CPUs in use by other "
                            f"processes) after {options.wait_idle:g} s; running anyway",
                            file=log,
                            flush=True,
                        )
                result = case.run(RunContext(options, plan, rep))
                runs[case.name].append(result)
                print(_one_line(case.name, result), file=log, flush=True)
    finished = datetime.datetime.now(datetime.UTC)
    doc: dict[str, Any] = {
        "schema": report.SCHEMA,
        "scenario": options.scenario,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "command": sys.argv,
        "machine": machine_info(),
        "versions": versions(),
        "pinning": plan.as_json(),
        "parameters": options.as_json(),
        "cases": [
            report.case_entry(case.name, case.description, case.reference, runs[case.name])
            for case in cases
        ],
        "ok": all(result.ok for results in runs.values() for result in results),
    }
    doc["ratios"], doc["notes"] = report.compute_ratios(doc, out_dir, options.against)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    json_path = options.json_path or out_dir / f"{options.scenario}-{stamp}.json"
    doc["files"] = {"json": str(json_path), "plots": []}
    if options.plot:
        plots = report.write_plots(doc, json_path.parent, json_path.stem)
        doc["files"]["plots"] = [str(p) for p in plots]
    report.write_json(doc, json_path)
    return doc
