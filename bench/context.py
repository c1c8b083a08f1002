"""What a scenario's cases get (``Options``, ``RunContext``) and give back (``CaseResult``)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from bench.harness import CpuPlan, ServerHandle, ServerSpec, external_server, start_server

T = TypeVar("T")
Figure = int | float | None


@dataclass(frozen=True)
class Options:
    """The command line, as every scenario sees it. ``None``: the case's own default."""

    scenario: str
    cases: tuple[str, ...] | None = None
    connections: int | None = None
    messages: int | None = None
    duration: float | None = None
    warmup: float | None = None
    rate: float | None = None
    window: int | None = None
    payload_size: int | None = None
    workers: int | None = None
    repeat: int = 1
    url: str | None = None
    server_pid: int | None = None
    #: With ``url``: the server's data directory, where Rivet scenarios make their users.
    data_dir: Path | None = None
    tiny: bool = False
    plot: bool = False
    json_path: Path | None = None
    out_dir: Path | None = None
    progress: bool | None = None
    pin: bool = True
    against: str | None = None
    wait_idle: float = 0.0
    #: ``ding``: DINGs to create, seconds from the first until their SMS steps fall due,
    #: and seconds over which the due times are spread (None: one instant).
    dings: int | None = None
    due_after: float | None = None
    due_spread: float | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in vars(self).items():
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out


@dataclass
class CaseResult:
    """One run of one case.

    ``figures`` are numbers (``None`` where they cannot be measured, e.g. server CPU of an
    external server without ``--server-pid``); the standard ones are ``throughput`` (units
    per second, ``unit`` says what a unit is), ``latency_p50_us``/``_p99_us``/``_p999_us``,
    ``server_cpu_us_per_unit``, ``server_cpu_util`` and ``server_peak_rss_mib``.
    ``correctness`` holds the exactly-once counts and ``ok`` says whether they add up.
    """

    unit: str
    figures: dict[str, Figure]
    correctness: dict[str, Any]
    ok: bool
    params: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "ok": self.ok,
            "figures": self.figures,
            "correctness": self.correctness,
            "params": self.params,
            "server": self.server,
            "notes": self.notes,
            "series": self.series,
        }


class Progress:
    """A one-line progress bar on stderr, for runs long enough to want one."""

    WIDTH = 30

    def __init__(
        self,
        label: str,
        total_units: int | None,
        total_seconds: float | None,
        enabled: bool,
        stream: TextIO = sys.stderr,
    ) -> None:
        self.label = label
        self.total_units = total_units
        self.total_seconds = total_seconds
        self.enabled = enabled
        self.stream = stream
        self._began = time.monotonic()
        self._last_draw = 0.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.2:
            return
        self._last_draw = now
        elapsed = now - self._began
        if self.total_seconds:
            fraction = elapsed / self.total_seconds
        elif self.total_units:
            fraction = done / self.total_units
        else:
            fraction = 0.0
        state = "draining" if fraction >= 1.0 and self.total_seconds else f"{fraction:4.0%}"
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        self.stream.write(
            f"\r{self.label:<18} [{bar}] {state:>8} {done:>10,} done {elapsed:6.1f} s"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


@dataclass
class RunContext:
    """Handed to every case: the options, the CPU plan, and ways to get a server."""

    options: Options
    cpu_plan: CpuPlan
    repetition: int = 0

    def pick(self, option: T | None, default: T, tiny: T) -> T:
        """The option if given, else the case's tiny or normal default."""
        if option is not None:
            return option
        return tiny if self.options.tiny else default

    def workers(self, connections: int, default: int | None = None) -> int:
        """How many load worker processes share ``connections`` connections."""
        wanted = self.options.workers or default or max(len(self.cpu_plan.load or ()), 1)
        return max(1, min(wanted, connections))

    @contextlib.contextmanager
    def server(self, spec: ServerSpec) -> Iterator[ServerHandle]:
        """Start ``spec`` (pinned per the CPU plan), or use ``--url`` when one was given."""
        if self.options.url:
            with external_server(self.options.url, self.options.server_pid) as handle:
                yield handle
        else:
            with start_server(spec, self.cpu_plan.server) as handle:
                yield handle

    def progress(
        self, label: str, total_units: int | None, total_seconds: float | None
    ) -> Progress:
        wanted = self.options.progress
        if wanted is None:
            long_run = (total_seconds or 0.0) >= 3.0 or (total_units or 0) >= 200_000
            wanted = long_run and sys.stderr.isatty() and os.environ.get("CI") is None
        return Progress(label, total_units, total_seconds, wanted)
