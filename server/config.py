"""One frozen ``Config``. Defaults run one host on SQLite with the in-process bus.

Precedence: built-in defaults < the TOML file given with ``--config`` < command-line flags.
Every field is documented here and by ``rivet serve --help``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from protocol import limits


@dataclass(frozen=True, slots=True)
class Config:
    #: Address to listen on. Loopback by default: put a TLS proxy in front, or use the
    #: built-in TLS, before exposing Rivet.
    host: str = "127.0.0.1"
    port: int = 8765
    #: Where the databases, keys and the notification outbox live.
    data_dir: Path = Path("./rivet-data")
    #: ``memory`` keeps everything in RAM (for tests and demos); ``sqlite`` is the default.
    store: str = "sqlite"
    #: SQLite ``synchronous``: FULL makes an ack survive power loss on honest disks.
    sqlite_synchronous: str = "FULL"
    #: Seconds an unauthenticated connection may live.
    handshake_deadline: float = limits.HANDSHAKE_DEADLINE_SECONDS
    #: Messages (frames) a connection's outbound queue holds before it is closed as a slow
    #: consumer (close 4050).
    send_queue_frames: int = 1024
    #: Access-token lifetime in seconds, refresh-token lifetime in days.
    access_token_ttl: float = 15 * 60
    refresh_token_ttl_days: float = 30
    #: C2: per-user rate of msg.send (token bucket: sustained per second, burst).
    send_rate_per_second: float = 20.0
    send_burst: int = 100
    #: C2: per-connection rate of all requests (token bucket).
    request_rate_per_second: float = 200.0
    request_burst: int = 1000
    #: Default member limit of an ordinary group (M2).
    group_member_limit: int = limits.DEFAULT_GROUP_MEMBER_LIMIT
    #: Interval at which read-count updates are coalesced and sent to senders.
    receipt_flush_seconds: float = 1.0
    #: How long shutdown waits for in-flight requests before closing sockets.
    shutdown_grace_seconds: float = 5.0
    #: Seconds between WebSocket pings; a peer that misses two is dropped.
    heartbeat_seconds: float = 30.0
    #: Log format: ``text`` or ``json``. Logs never contain message content or credentials.
    log_format: str = "text"
    log_level: str = "INFO"

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/"

    def with_overrides(self, **overrides: Any) -> Config:
        """A copy with the given non-None fields replaced (used for command-line flags)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if "data_dir" in chosen:
            chosen["data_dir"] = Path(chosen["data_dir"])
        return replace(self, **chosen)


def load_config(path: Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file (top-level keys named like the fields), then overrides."""
    config = Config()
    if path is not None:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
        section = table.get("server", table)
        config = config.with_overrides(**section)
    config = config.with_overrides(**overrides)
    validate(config)
    return config


def validate(config: Config) -> None:
    if config.store not in ("sqlite", "memory"):
        raise ValueError(f"store must be 'sqlite' or 'memory', not {config.store!r}")
    if config.sqlite_synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError("sqlite_synchronous must be FULL, NORMAL or EXTRA")
    if not 0 <= config.port <= 65535:
        raise ValueError("port must be 0-65535")
    if config.send_queue_frames < 16:
        raise ValueError("send_queue_frames must be at least 16")
    if config.log_format not in ("text", "json"):
        raise ValueError("log_format must be 'text' or 'json'")
