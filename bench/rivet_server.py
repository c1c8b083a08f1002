"""Rivet as the bench runs it: the ``rivet serve`` command line, and users to load it with.

Users are made with ``rivet users bulk`` (users with a device and tokens, as JSON lines),
the way an operator would. Making 10,000 takes a while, so it is done once per count and per
``python -m bench`` process, into a template data directory (``rivet users bulk`` writes the
server keys there too), which every server started afterwards gets a copy of before it
starts (``ServerSpec.prepare``): each run still has a fresh data directory of its own.
Against ``--url`` the users are made in the server's own data directory (``--data-dir``).

The server runs with its defaults (SQLite, ``synchronous=FULL``: acks only after a durable
commit) except where a default would refuse the load itself: the per-user and
per-connection rate limits (C2) are lifted far above the offered load (they are still
checked, so their cost is counted), and the group-size and connection limits are raised to
the scenario's sizes.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.context import RunContext
from bench.harness import ServerError, ServerHandle, ServerSpec

ROOT = str(Path(__file__).resolve().parents[1])
#: Far above any offered load: the limits are checked on every request but never refuse.
UNLIMITED_RATE = "1000000"
BULK_TIMEOUT = 600.0


@dataclass(frozen=True)
class User:
    """One line of ``rivet users bulk``."""

    user_id: int
    device_id: int
    access_token: str
    refresh_token: str


def pythonpath() -> str:
    """PYTHONPATH for a child process that imports this project."""
    return os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)


def rivet_spec(
    name: str,
    *,
    users: int,
    group_members: int = 0,
    connections: int = 0,
    extra: Sequence[str] = (),
) -> ServerSpec:
    """``rivet serve`` on a copy of a data directory holding ``users`` users."""
    argv = [
        *("{python}", "-m", "server.cli", "serve", "--host", "{host}", "--port", "{port}"),
        *("--data-dir", "{data_dir}", "--log-level", "WARNING"),
        *("--send-rate-per-second", UNLIMITED_RATE, "--send-burst", UNLIMITED_RATE),
        *("--request-rate-per-second", UNLIMITED_RATE),
    ]
    if group_members:
        argv += ["--group-member-limit", str(max(group_members, 2))]
    if connections:
        argv += ["--max-connections", str(connections + 100)]
    argv += list(extra)
    template = template_for(users) if users else None
    return ServerSpec(
        name,
        tuple(argv),
        env={"PYTHONPATH": pythonpath()},
        ready_timeout=60.0,
        # ``rivet serve`` prints it once listening (a bare TCP probe would hold up its
        # shutdown until the handshake deadline).
        ready_text="rivet: listening on",
        prepare=None if template is None else _copier(template),
    )


# --- users ------------------------------------------------------------------------------------

_templates: dict[int, Path] = {}
_root: Path | None = None


def _template_root() -> Path:
    global _root
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix="rivet-bench-users-"))
        atexit.register(shutil.rmtree, _root, True)
    return _root


def bulk(data_dir: Path, count: int, out: Path) -> list[User]:
    """``rivet users bulk --count COUNT`` into ``data_dir``; the users, in index order."""
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "server.cli", "users", "bulk"),
            *("--data-dir", str(data_dir), "--count", str(count), "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=BULK_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise ServerError(f"rivet users bulk failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return read_users(out)


def read_users(path: Path) -> list[User]:
    users = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        users.append(
            User(
                user_id=int(row["user_id"]),
                device_id=int(row["device_id"]),
                access_token=row["access_token"],
                refresh_token=row["refresh_token"],
            )
        )
    return users


def template_for(count: int) -> Path:
    """A data directory holding ``count`` users made by ``rivet users bulk`` (made once)."""
    template = _templates.get(count)
    if template is None:
        template = _template_root() / f"users-{count}"
        template.mkdir()
        bulk(template / "data", count, template / "users.jsonl")
        _templates[count] = template
    return template


def _copier(template: Path) -> Callable[[Path], None]:
    def prepare(data_dir: Path) -> None:
        shutil.copytree(template / "data", data_dir, dirs_exist_ok=True)

    return prepare


def users_of(ctx: RunContext, server: ServerHandle, count: int) -> list[User]:
    """The ``count`` users of this run's server: the template's for a server we started,
    made now in ``--data-dir`` for one given with ``--url``."""
    if ctx.options.url is None:
        return read_users(template_for(count) / "users.jsonl")
    if ctx.options.data_dir is None:
        raise ServerError("Rivet scenarios against --url need the server's --data-dir")
    out = Path(tempfile.mkdtemp(prefix="rivet-bench-users-")) / "users.jsonl"
    try:
        return bulk(ctx.options.data_dir, count, out)
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


# --- set-up through the server ------------------------------------------------------------------


def create_group(url: str, owner: User, members: Sequence[int], title: str = "bench") -> str:
    """A group owned by ``owner`` with ``members`` (in chunks of ``MAX_USERS_PER_REQUEST``),
    made through the server as a client would; returns its id. Runs in the orchestrator."""
    import trio

    from bench.rivet_client import Wire
    from protocol import limits, replies
    from protocol import requests as rq

    async def make() -> str:
        async with trio.open_nursery() as nursery:
            wire = await Wire.open(nursery, url, owner.access_token)
            chunk = limits.MAX_USERS_PER_REQUEST
            created = await wire.call(
                rq.GroupCreate(rid=0, cmid=f"bench-{title}", title=title, members=[]),
                replies.GroupCreated,
            )
            assert created is not None
            conv = created.conv.conv
            for first in range(0, len(members), chunk):
                await wire.call(
                    rq.GroupAdd(rid=0, conv=conv, users=list(members[first : first + chunk]))
                )
            await wire.ws.aclose()
            nursery.cancel_scope.cancel()
        return conv

    return trio.run(make)
