"""Running the real ``rivet`` command in a subprocess, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import IO

import trio

from client import ClientState

RIVET = [sys.executable, "-m", "server.cli"]


def create_users(data_dir: Path, count: int, *, prefix: str = "+1888") -> list[ClientState]:
    """Users with tokens, made with ``rivet users bulk`` before the server starts."""
    out = data_dir.parent / f"users-{prefix[1:]}.jsonl"
    subprocess.run(
        [
            *RIVET,
            "users",
            "bulk",
            "--data-dir",
            str(data_dir),
            "--count",
            str(count),
            "--phone-prefix",
            prefix,
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    states = []
    for line in out.read_text().splitlines():
        row = json.loads(line)
        states.append(
            ClientState(
                access_token=row["access_token"],
                refresh_token=row["refresh_token"],
                user_id=row["user_id"],
                device_id=row["device_id"],
            )
        )
    return states


def _read_port(port_file: Path) -> int | None:
    text = port_file.read_text() if port_file.exists() else ""
    return int(text) if text else None


async def _wait_for_port(port_file: Path, process: trio.Process) -> int:
    for _ in range(400):  # 20 s
        if process.returncode is not None:
            raise RuntimeError(f"rivet serve exited with {process.returncode}")
        port = _read_port(port_file)
        if port is not None:
            return port
        await trio.sleep(0.05)
    raise TimeoutError("rivet serve did not start listening within 20 s")


@asynccontextmanager
async def rivet_server(
    data_dir: Path, *extra: str, stderr: IO[bytes] | None = None
) -> AsyncIterator[tuple[trio.Process, str]]:
    """``rivet serve`` on a free loopback port; yields (process, url). On exit the process
    is stopped with SIGTERM if it still runs (tests may SIGKILL it first). ``stderr``: a
    file for the server's log (default: inherited)."""
    port_file = data_dir.parent / f"port-{os.getpid()}-{trio.current_time()}"
    cmd = [
        *RIVET,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--port-file",
        str(port_file),
        "--log-level",
        "WARNING",
        *extra,
    ]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            partial(trio.run_process, cmd, check=False, stdout=subprocess.DEVNULL, stderr=stderr)
        )
        try:
            port = await _wait_for_port(port_file, process)
            url = f"ws://127.0.0.1:{port}/"
            yield process, url
        finally:
            if process.returncode is None:
                process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
            port_file.unlink(missing_ok=True)
