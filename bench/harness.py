"""The server side of a benchmark run.

* ``start_server``: start the server as a user would, a subprocess with a fresh data
  directory on a free loopback port, wait until it accepts TCP connections, stop it with
  SIGINT (then SIGTERM, then SIGKILL) when the run is over;
* ``external_server``: target a server someone else started (``--url``), optionally with
  its pid (``--server-pid``) for the CPU and memory figures;
* the server's own accounting: CPU time from ``/proc/<pid>/stat`` (utime + stime, all
  threads) and memory from ``/proc/<pid>/status`` (VmRSS, VmHWM);
* ``CpuPlan``: the server on one core, the load generator on the others, where the machine
  has at least two;
* ``machine_info`` and ``versions`` for the results file.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """The server did not start, or died during the run; the message has its log's tail."""


# --- the server's own accounting -------------------------------------------------------------


def read_cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (all its threads), in seconds.

    The resolution is one clock tick (``1/CLK_TCK`` s, 10 ms on most Linux systems).
    """
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read()
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def read_memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (peak resident) of the process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def read_system_busy_seconds() -> float:
    """CPU time all CPUs have spent not idle since boot (``/proc/stat``), in seconds."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def machine_busy(sample_s: float = 1.0) -> float:
    """CPUs' worth of busy time on the whole machine over the next ``sample_s`` seconds."""
    before, t0 = read_system_busy_seconds(), time.monotonic()
    time.sleep(sample_s)
    return (read_system_busy_seconds() - before) / (time.monotonic() - t0)


def wait_for_idle(limit_s: float, threshold: float = 0.15) -> tuple[bool, float]:
    """Wait (at most ``limit_s`` seconds) until the machine uses under ``threshold`` CPUs.

    Returns whether it did, and the last measured use.
    """
    deadline = time.monotonic() + limit_s
    while True:
        busy = machine_busy(1.0)
        if busy < threshold:
            return True, busy
        if time.monotonic() >= deadline:
            return False, busy


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU time used so far by the server, by the load generator, and by the whole machine.

    The load generator is the given worker pids plus this (orchestrating) process; the
    rest of the machine's busy time went to processes that are not part of the run.
    """

    t_ns: int
    server_s: float | None
    load_s: float
    system_busy_s: float

    @classmethod
    def take(cls, server_pid: int | None, load_pids: Iterable[int]) -> CpuSnapshot:
        load = read_cpu_seconds(os.getpid())
        for pid in load_pids:
            with contextlib.suppress(OSError):  # a worker that has already exited
                load += read_cpu_seconds(pid)
        server = None if server_pid is None else read_cpu_seconds(server_pid)
        return cls(time.monotonic_ns(), server, load, read_system_busy_seconds())


class CpuSampler:
    """Samples a process's CPU time every ``interval`` seconds in a background thread.

    ``samples`` is a list of ``(time.monotonic_ns(), cpu_seconds)`` for plotting the server's
    CPU use over time; the measured figures use exact reads at the window's edges instead.
    """

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((time.monotonic_ns(), read_cpu_seconds(self.pid)))
            except OSError:
                return
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- CPU pinning ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs the server and the load generator run on (``None``: not pinned)."""

    server: tuple[int, ...] | None
    load: tuple[int, ...] | None
    note: str

    @classmethod
    def choose(cls, pin: bool = True, external: bool = False) -> CpuPlan:
        """Server on the last available CPU, load generator on the others.

        With ``external`` (``--url``) the server is not ours to pin; the load generator
        still keeps off the CPU it would have had, so that a server pinned there by hand
        (``taskset -c N``) gets it to itself.
        """
        available = sorted(os.sched_getaffinity(0))
        if not pin:
            return cls(None, None, f"not pinned (--no-pin); {len(available)} CPUs shared")
        if len(available) < 2:
            return cls(None, None, f"not pinned: only {len(available)} CPU available")
        server, load = (available[-1],), tuple(available[:-1])
        if external:
            return cls(
                None,
                load,
                f"external server, not pinned by the harness (pin it with taskset -c "
                f"{_cpus(server)}); load generator pinned to CPU {_cpus(load)}",
            )
        return cls(
            server,
            load,
            f"server pinned to CPU {_cpus(server)}, load generator to CPU {_cpus(load)}",
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "server_cpus": list(self.server) if self.server else None,
            "load_cpus": list(self.load) if self.load else None,
            "note": self.note,
        }


def _cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...] | None) -> Iterator[None]:
    """Run the block with this process pinned to ``cpus``, then restore the old mask."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# --- server processes -----------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """How to start a server as a user would.

    ``argv`` items may contain ``{python}``, ``{host}``, ``{port}`` and ``{data_dir}``; the
    data directory is fresh and empty for every start.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 20.0
    stop_timeout: float = 10.0
    #: Called with the fresh (empty) data directory before the server starts, e.g. to put
    #: users made with ``rivet users bulk`` in it.
    prepare: Callable[[Path], None] | None = None
    #: Text the server prints once it is listening. When given, readiness is read from the
    #: log instead of probed with a TCP connection: a connection that closes before its
    #: WebSocket handshake can hold a server's shutdown until its handshake deadline.
    ready_text: str | None = None

    def render(self, host: str, port: int, data_dir: Path) -> list[str]:
        values = {"python": sys.executable, "host": host, "port": port, "data_dir": data_dir}
        return [arg.format(**values) for arg in self.argv]


@dataclass
class ServerHandle:
    """A running server: where to connect, and its pid when we can account for it."""

    name: str
    url: str
    pid: int | None
    argv: list[str] | None = None
    cpus: tuple[int, ...] | None = None
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None
    #: Set by ``terminate``: the server was stopped on purpose, not lost.
    _terminated: bool = False

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or LOOPBACK

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        if port is None:
            raise ValueError(f"no port in {self.url}")
        return port

    @property
    def data_dir(self) -> Path | None:
        """The data directory of a server we started (``start_server``'s layout)."""
        return None if self.log_path is None else self.log_path.parent / "data"

    def cpu_seconds(self) -> float | None:
        return None if self.pid is None else read_cpu_seconds(self.pid)

    def memory_kib(self) -> dict[str, int] | None:
        return None if self.pid is None else read_memory_kib(self.pid)

    def terminate(self, timeout: float = 60.0) -> int:
        """Stop a server we started with SIGTERM to its own pid, as an init system would;
        its exit status (a negative signal number if it did not exit in ``timeout`` and
        was killed)."""
        if self._proc is None:
            raise ServerError(f"server {self.name} was not started here: cannot stop it")
        self._terminated = True
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                return self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return self._proc.wait()

    def check_alive(self) -> None:
        """Raise ``ServerError`` if the server we started has exited (not by ``terminate``)."""
        if self._proc is not None and not self._terminated and self._proc.poll() is not None:
            raise ServerError(
                f"server {self.name} exited with status {self._proc.returncode} during the run"
                + _log_tail(self.log_path)
            )

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "managed": self._proc is not None,
            "argv": self.argv,
            "cpus": list(self.cpus) if self.cpus else None,
        }


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {path} ---\n" + "\n".join(tail)


def _wait_accepting(
    proc: subprocess.Popen[bytes],
    host: str,
    port: int,
    timeout: float,
    ready: tuple[Path, int, str] | None = None,
) -> None:
    """Until the server accepts: ``ready`` is (log, offset, text): the text printed in the
    log after ``offset`` (a restarted server appends to its predecessor's log)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerError(f"exited with status {proc.returncode} before accepting")
        if ready is not None:
            log_path, offset, text = ready
            with open(log_path, "rb") as log:
                log.seek(offset)
                if text.encode() in log.read():
                    return
        else:
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise ServerError(f"not accepting on {host}:{port} after {timeout:g} s")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int:
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 3.0)):
        if proc.poll() is not None:
            return proc.returncode
        proc.send_signal(sig)
        try:
            return proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    return proc.wait()


@contextlib.contextmanager
def start_server(
    spec: ServerSpec,
    cpus: tuple[int, ...] | None = None,
    host: str = LOOPBACK,
    workroot: Path | None = None,
    *,
    port: int | None = None,
    workdir: Path | None = None,
) -> Iterator[ServerHandle]:
    """Start ``spec`` on a free port with a fresh data directory; stop it on exit.

    The data directory and the server's log live in a new directory under ``workroot``
    (default: the system's temporary directory), removed after a clean stop and kept, with
    a warning, when the server failed.

    A restart (the ``storm`` scenario) passes the ``port`` and ``workdir`` of the server it
    replaces: the data directory is then reused as it is (``spec.prepare`` is not called),
    the log appended to, and the directory left for the caller to remove.
    """
    if host != LOOPBACK and not host.startswith("127."):
        raise ValueError("benchmark servers listen on loopback only")
    owned = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"rivet-bench-{spec.name}-", dir=workroot))
    data_dir = workdir / "data"
    if owned:
        data_dir.mkdir()
        if spec.prepare is not None:
            spec.prepare(data_dir)
    log_path = workdir / "server.log"
    port = free_port(host) if port is None else port
    argv = spec.render(host, port, data_dir)
    env = {**os.environ, **spec.env}
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _raise_nofile(proc.pid)
        if cpus is not None:
            os.sched_setaffinity(proc.pid, cpus)
        try:
            ready = None if spec.ready_text is None else (log_path, offset, spec.ready_text)
            _wait_accepting(proc, host, port, spec.ready_timeout, ready)
        except ServerError as exc:
            raise ServerError(f"server {spec.name}: {exc}" + _log_tail(log_path)) from None
        handle = ServerHandle(
            spec.name, f"ws://{host}:{port}", proc.pid, argv, cpus, log_path, _proc=proc
        )
        yield handle
        handle.check_alive()
    finally:
        status = _stop(proc, spec.stop_timeout)
        if status in (0, -signal.SIGINT):
            if owned:
                shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(
                f"warning: server {spec.name} exited with status {status}; "
                f"its log and data are kept in {workdir}",
                file=sys.stderr,
            )


def _raise_nofile(pid: int) -> None:
    """Lift the server's soft open-file limit to the hard one (10,000 connections need
    10,000 descriptors), where the kernel lets us; the server may do it itself too."""
    with contextlib.suppress(OSError, ValueError):
        _soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def external_server(url: str, pid: int | None, name: str = "external") -> Iterator[ServerHandle]:
    """A server started elsewhere (``--url``): nothing to start or stop."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or parts.port is None:
        raise ValueError(f"--url must look like ws://127.0.0.1:PORT, not {url!r}")
    if pid is not None:
        read_cpu_seconds(pid)  # fail early on a wrong pid
    yield ServerHandle(name, f"{parts.scheme}://{parts.hostname}:{parts.port}", pid)


# --- what ran where -------------------------------------------------------------------------


def _first_line(path: str, prefix: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info() -> dict[str, Any]:
    mem = _first_line("/proc/meminfo", "MemTotal")
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": _first_line("/proc/cpuinfo", "model name"),
        "cpu_count": os.cpu_count(),
        "cpus_available": sorted(os.sched_getaffinity(0)),
        "mem_total_kib": int(mem.split()[0]) if mem else None,
        "clock_ticks_per_s": CLK_TCK,
    }


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version()}
    for dist in ("rivet-server", "trio", "trio-websocket", "wsproto", "msgspec", "matplotlib"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    out["git_commit"] = commit
    out["git_dirty"] = None if status is None else bool(status)
    return out
