"""``python -m bench SCENARIO [options]``; ``python -m bench --list`` names the scenarios."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import report, runner, scenarios
from bench.context import Options
from bench.harness import ServerError
from bench.loadgen import WorkerFailed


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Rivet load harness: run a scenario, print a table, write JSON "
        "(machine, versions, parameters, figures).",
        epilog="Options left out take each case's own default; --tiny picks smoke-test sizes. "
        "Exit status: 0 all messages arrived exactly once, 1 they did not or a run failed, "
        "2 usage error.",
    )
    p.add_argument("scenario", nargs="?", help="scenario name (see --list)")
    p.add_argument("--list", action="store_true", help="list the scenarios and their cases")
    p.add_argument(
        "--case",
        action="append",
        dest="cases",
        metavar="NAME",
        help="run only this case (repeatable)",
    )
    p.add_argument(
        "--connections",
        type=_positive_int,
        help="connections (echo), subscribers (broadcast), connections opened (connections)",
    )
    p.add_argument(
        "--messages",
        type=_positive_int,
        help="run by count: messages per connection (echo) or published (broadcast)",
    )
    p.add_argument(
        "--duration",
        type=_positive_float,
        help="run by time: measured seconds per case (after --warmup)",
    )
    p.add_argument(
        "--warmup",
        type=_non_negative_float,
        help="seconds of load before the measured window (with --duration)",
    )
    p.add_argument(
        "--rate", type=_positive_float, help="open loop: total messages (or publishes) per second"
    )
    p.add_argument(
        "--window",
        type=_positive_int,
        help="messages in flight per connection (publisher for broadcast)",
    )
    p.add_argument("--payload-size", type=_positive_int, help="bytes per message (about)")
    p.add_argument("--dings", type=_positive_int, help="ding: DINGs to create (default 100,000)")
    p.add_argument(
        "--due-after",
        type=_positive_float,
        metavar="SECONDS",
        help="ding: the SMS steps fall due this long after the first DING is sent "
        "(default: 40 s + 1 s per 600 DINGs)",
    )
    p.add_argument(
        "--due-spread",
        type=_positive_float,
        metavar="SECONDS",
        help="ding: spread the SMS steps' due times evenly over this long (default: one "
        "instant, the hand-over's peak rate)",
    )
    p.add_argument(
        "--workers", type=_positive_int, help="load worker processes (default: one per load CPU)"
    )
    p.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        help="run every case this many times (interleaved); report median and spread",
    )
    p.add_argument("--url", help="target this server (ws://127.0.0.1:PORT) instead of starting one")
    p.add_argument(
        "--server-pid", type=int, help="with --url: the server's pid, for its CPU and RSS figures"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help="with --url: the server's data directory; Rivet scenarios make their users in it "
        "with 'rivet users bulk'",
    )
    p.add_argument(
        "--tiny", action="store_true", help="smoke-test sizes: checks the harness, measures nothing"
    )
    p.add_argument(
        "--json",
        type=Path,
        dest="json_path",
        metavar="PATH",
        help="results file (default: OUT_DIR/SCENARIO-TIMESTAMP.json)",
    )
    p.add_argument(
        "--out-dir", type=Path, help=f"results directory (default: {runner.RESULTS_DIR})"
    )
    p.add_argument(
        "--plot",
        action="store_true",
        help="also write PNG charts next to the JSON (needs the 'plot' extra: matplotlib)",
    )
    p.add_argument(
        "--against",
        metavar="PATH",
        help="results file holding the reference cases named SCENARIO:CASE "
        "(default: the newest SCENARIO-*.json in OUT_DIR)",
    )
    p.add_argument(
        "--wait-idle",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="before each case, wait up to this long for other processes to leave the "
        "machine idle (shared machines); every case reports the CPU others used anyway",
    )
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server and the load generator to separate CPUs",
    )
    progress = p.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="always show the progress bar",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show the progress bar"
    )
    return p


def _list() -> str:
    lines = []
    for name in scenarios.names():
        scenario = scenarios.get(name)
        lines.append(f"{name}: {scenario.help}")
        for case in scenario.build(Options(scenario=name)):
            ref = f"  [ratio against {case.reference}]" if case.reference else ""
            lines.append(f"  {case.name}: {case.description}{ref}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        print(_list())
        return 0
    if not args.scenario:
        parser().print_usage(sys.stderr)
        print("python -m bench: error: name a scenario (see --list)", file=sys.stderr)
        return 2
    if args.messages is not None and args.duration is not None:
        print("python -m bench: error: give --messages or --duration, not both", file=sys.stderr)
        return 2
    if args.server_pid is not None and not args.url:
        print("python -m bench: error: --server-pid goes with --url", file=sys.stderr)
        return 2
    if args.data_dir is not None and not args.url:
        print("python -m bench: error: --data-dir goes with --url", file=sys.stderr)
        return 2
    fields = vars(args)
    fields.pop("list")
    cases = fields.pop("cases")
    options = Options(**fields, cases=tuple(cases) if cases else None)
    try:
        doc = runner.run(options)
    except (runner.UsageError, report.PlotUnavailable) as exc:
        print(f"python -m bench: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except (ServerError, WorkerFailed) as exc:
        print(f"python -m bench: run failed: {exc}", file=sys.stderr)
        return 1
    report.print_report(doc, sys.stdout)
    print(f"\nresults: {doc['files']['json']}")
    for path in doc["files"]["plots"]:
        print(f"plot: {path}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
