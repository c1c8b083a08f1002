"""The server's counters, and their Prometheus text rendering (served by ``server.ops_http``).

One process-wide ``METRICS`` object, like the default registry of Prometheus client
libraries: the code that counts does an attribute lookup and an integer add, nothing more
(no locks: everything runs in the trio thread). Gauges that describe current state (open
connections, queue depths) are not kept here but read from their owners when scraped, so
they can never drift.

Counters are per process and start at zero when it starts; Prometheus' ``rate()`` and
``increase()`` handle the reset. Labels are bounded sets (error and close codes, rate
classes, moderation actions), never user ids or conversation ids.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the commit-latency histogram buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class Counter:
    help: str
    value: int = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


@dataclass(slots=True)
class LabeledCounter:
    """A counter per value of one label (bounded: codes, classes, actions)."""

    help: str
    label: str
    values: dict[str, int] = field(default_factory=dict)

    def inc(self, key: object, amount: int = 1) -> None:
        name = str(key)
        self.values[name] = self.values.get(name, 0) + amount

    def get(self, key: object) -> int:
        return self.values.get(str(key), 0)


@dataclass(slots=True)
class Histogram:
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class Metrics:
    connections_accepted: Counter = field(
        default_factory=lambda: Counter("WebSocket connections accepted.")
    )
    upgrades_refused: LabeledCounter = field(
        default_factory=lambda: LabeledCounter(
            "HTTP upgrades refused before the WebSocket opened, by reason.", "reason"
        )
    )
    closes: LabeledCounter = field(
        default_factory=lambda: LabeledCounter("Connections closed, by close code.", "code")
    )
    connection_failures: Counter = field(
        default_factory=lambda: Counter(
            "Connection tasks ended by an unexpected exception (that connection only)."
        )
    )
    requests: Counter = field(default_factory=lambda: Counter("Frames received and handled."))
    errors: LabeledCounter = field(
        default_factory=lambda: LabeledCounter("Error replies sent, by error code.", "code")
    )
    rate_limited: LabeledCounter = field(
        default_factory=lambda: LabeledCounter(
            "Requests refused by a rate limit (C2), by budget.", "budget"
        )
    )
    messages: Counter = field(
        default_factory=lambda: Counter("Messages stored and acknowledged (duplicates excluded).")
    )
    duplicate_sends: Counter = field(
        default_factory=lambda: Counter("msg.send resends answered with the original ack.")
    )
    deliveries: Counter = field(
        default_factory=lambda: Counter("Live event frames queued to connections.")
    )
    commit_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            "Seconds to make one msg.send durable (store append, group commit included)."
        )
    )
    moderation_acts: LabeledCounter = field(
        default_factory=lambda: LabeledCounter(
            "Moderation acts applied to live connections, by action (C1).", "action"
        )
    )


METRICS = Metrics()


def render(metrics: Metrics, gauges: Mapping[str, tuple[str, float]]) -> str:
    """The Prometheus text exposition (format 0.0.4) of ``metrics`` and ``gauges``
    (name -> (help, value)); every name is prefixed ``rivet_``."""
    lines: list[str] = []
    for name, (help_text, value) in gauges.items():
        lines += _header(name, help_text, "gauge")
        lines.append(f"rivet_{name} {_number(value)}")
    for name in metrics.__slots__:
        metric = getattr(metrics, name)
        if isinstance(metric, Counter):
            lines += _header(f"{name}_total", metric.help, "counter")
            lines.append(f"rivet_{name}_total {metric.value}")
        elif isinstance(metric, LabeledCounter):
            lines += _header(f"{name}_total", metric.help, "counter")
            for key, value in sorted(metric.values.items()):
                lines.append(f'rivet_{name}_total{{{metric.label}="{_escape(key)}"}} {value}')
        elif isinstance(metric, Histogram):
            lines += _header(name, metric.help, "histogram")
            lines += _histogram_lines(name, metric)
    return "\n".join(lines) + "\n"


def _header(name: str, help_text: str, kind: str) -> list[str]:
    return [f"# HELP rivet_{name} {help_text}", f"# TYPE rivet_{name} {kind}"]


def _histogram_lines(name: str, metric: Histogram) -> Iterable[str]:
    running = 0
    for bound, count in zip(metric.buckets, metric.counts, strict=True):
        running += count
        yield f'rivet_{name}_bucket{{le="{bound}"}} {running}'
    yield f'rivet_{name}_bucket{{le="+Inf"}} {metric.count}'
    yield f"rivet_{name}_sum {_number(metric.total)}"
    yield f"rivet_{name}_count {metric.count}"


def _number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
