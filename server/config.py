"""One frozen ``Config``. Defaults run one host on SQLite with the in-process bus.

Precedence: built-in defaults < the TOML file given with ``--config`` < command-line flags.
Every field is documented here and by ``rivet serve --help``.
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    #: Bytes a connection's outbound queue holds before it is closed as a slow consumer
    #: (close 4050); whichever of the two bounds is reached first applies.
    send_queue_bytes: int = 4 * 1024 * 1024
    #: Browser origins (``scheme://host[:port]``) allowed to open a WebSocket. A handshake
    #: with an ``Origin`` header not listed is refused with HTTP 403 (cross-site WebSocket
    #: hijacking); one without ``Origin`` (native apps, SDKs) is accepted. ``*`` allows all.
    allowed_origins: tuple[str, ...] = ()
    #: Connections one user may have open; one more is closed with 4053 once it has
    #: authenticated (the user is not known before).
    max_connections_per_user: int = 16
    #: Connections the server holds in all; past it, upgrades are refused with HTTP 503.
    max_connections: int = 10_000
    #: Access-token lifetime in seconds, refresh-token lifetime in days.
    access_token_ttl: float = 15 * 60
    refresh_token_ttl_days: float = 30
    #: C2: per-user rate of msg.send (token bucket: sustained per second, burst).
    send_rate_per_second: float = 20.0
    send_burst: int = 100
    #: C2: per-connection rate of all requests (token bucket).
    request_rate_per_second: float = 200.0
    request_burst: int = 1000
    #: C2: per-user rates of DINGs (ding.send, ding.redding), of signalling (ping, typing,
    #: presence, live.*) and of C1 reports, all of a user's connections together.
    ding_rate_per_second: float = 0.2
    ding_burst: int = 10
    signal_rate_per_second: float = 20.0
    signal_burst: int = 200
    report_rate_per_second: float = 0.05
    report_burst: int = 10
    #: C2: a connection refused this many times faster than one a second is closed (4051).
    flood_strikes: int = 50
    #: C1: seconds between polls of the moderation log, through which suspensions and
    #: removals made with ``rivet moderate`` reach live connections.
    moderation_poll_seconds: float = 2.0
    #: Middle-generation collections between two chances of a full garbage collection
    #: (CPython's default is 10; ``server.collector`` says why a server wants more).
    gc_old_threshold: int = 100
    #: The operations endpoint (/healthz, /metrics): off unless a port is given (0 picks a
    #: free one). Loopback by default; it has no authentication.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    #: Built-in TLS: PEM certificate chain and private key; with both, clients use wss://.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: A3: a file holding the master key that wraps the data keys (base64, mode 0600). The
    #: RIVET_MASTER_KEY environment variable may give it instead; with neither, the key is
    #: ``<data_dir>/keys/master.key``, created on first start (docs/encryption.md).
    master_key_file: Path | None = None
    #: A hard ceiling on each SQLite database, in pages (4 KiB each by default): past it
    #: writes fail with storage_full (4002) and nothing is stored. None: no ceiling.
    sqlite_max_page_count: int | None = None
    #: Default member limit of an ordinary group (M2): the base tier, always equal to the
    #: first of ``group_member_tiers`` (giving either one sets both).
    group_member_limit: int = limits.DEFAULT_GROUP_MEMBER_LIMIT
    #: M2: member-limit tiers, ascending: the base limit, then what a paid expansion
    #: (``group.expand``) may raise a group to, at most 10,000; the package units one
    #: expansion period of each tier after the base costs (one price per such tier); and how
    #: many days one period lasts (renewing adds another).
    group_member_tiers: tuple[int, ...] = (
        limits.DEFAULT_GROUP_MEMBER_LIMIT,
        1000,
        2000,
        5000,
        limits.MAX_GROUP_MEMBER_LIMIT,
    )
    group_tier_prices: tuple[int, ...] = (100, 200, 500, 1000)
    group_expansion_days: float = 30.0
    #: O4: rows the dissolution job deletes per transaction, and seconds it waits between
    #: two of them (0: none). A pause spreads a large organisation's deletion out.
    dissolution_chunk_rows: int = 1000
    dissolution_pause_seconds: float = 0.0
    #: Interval at which read-count updates are coalesced and sent to senders.
    receipt_flush_seconds: float = 1.0
    #: L1 live streams: co-hosts on stage at once; seconds a host has to come back after a
    #: disconnect or a server restart; seconds between coalesced viewer/like count events;
    #: seconds between stores of a stream's viewer figures while it is live.
    live_max_cohosts: int = limits.DEFAULT_LIVE_COHOSTS
    live_grace_seconds: float = limits.DEFAULT_LIVE_GRACE_SECONDS
    live_counts_seconds: float = limits.DEFAULT_LIVE_COUNTS_SECONDS
    live_checkpoint_seconds: float = 10.0
    #: G1: the plan of a DING sent without one: an SMS this many seconds after it went out,
    #: a call this many seconds after it went out, while unconfirmed (negative: no such step).
    ding_sms_after_seconds: int = 300
    ding_call_after_seconds: int = 900
    #: G3: a sender may re-DING the unconfirmed recipients at most this often.
    ding_redding_interval_seconds: float = 300.0
    #: G2: a personal user's free SMS and call steps per month, months counted in this
    #: IANA time zone.
    ding_personal_sms_per_month: int = 10
    ding_personal_calls_per_month: int = 3
    ding_quota_timezone: str = "UTC"
    #: C2: DINGs one person may receive (from anyone) per minute, and at once.
    ding_recipient_per_minute: float = 6.0
    ding_recipient_burst: int = 10
    #: Where SMS, calls and login codes go: ``outbox`` (``<data_dir>/outbox.jsonl``, read with
    #: ``rivet outbox``) or ``webhook`` (POST to ``webhook_url``, signed with
    #: ``webhook_secret``; the secret may come from the RIVET_WEBHOOK_SECRET environment
    #: variable instead of a flag or the file).
    notifier: str = "outbox"
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    #: Seconds one webhook request may take, and attempts per notification (exponential
    #: backoff between them) before it counts as failed.
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 5
    #: How long shutdown waits for in-flight requests before closing sockets.
    shutdown_grace_seconds: float = 5.0
    #: Seconds between WebSocket pings; a peer that misses two is dropped.
    heartbeat_seconds: float = 30.0
    #: Log format: ``text`` or ``json``. Logs never contain message content or credentials.
    log_format: str = "text"
    log_level: str = "INFO"

    @property
    def url(self) -> str:
        scheme = "wss" if self.tls_cert is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}/"

    def with_overrides(self, **overrides: Any) -> Config:
        """A copy with the given non-None fields replaced (used for command-line flags)."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if "data_dir" in chosen:
            chosen["data_dir"] = Path(chosen["data_dir"])
        for key in ("tls_cert", "tls_key", "master_key_file"):
            if key in chosen:
                chosen[key] = Path(chosen[key])
        if isinstance(chosen.get("allowed_origins"), str):
            chosen["allowed_origins"] = (chosen["allowed_origins"],)
        if "allowed_origins" in chosen:
            chosen["allowed_origins"] = tuple(chosen["allowed_origins"])
        _sync_group_tiers(self, chosen)
        return replace(self, **chosen)

    @property
    def group_expansion_tiers(self) -> dict[int, int]:
        """M2: member limit -> price of one period, for every tier above the base limit."""
        pairs = zip(self.group_member_tiers[1:], self.group_tier_prices, strict=False)
        return {tier: price for tier, price in pairs if tier > self.group_member_limit}


def _sync_group_tiers(current: Config, chosen: dict[str, Any]) -> None:
    """M2: ``group_member_limit`` is the first of ``group_member_tiers``. Giving the tiers
    sets the limit; giving only the limit keeps the default tiers above it (and their
    prices)."""
    for key in ("group_member_tiers", "group_tier_prices"):
        if key in chosen:
            chosen[key] = tuple(int(v) for v in chosen[key])
    if "group_member_tiers" in chosen:
        if chosen["group_member_tiers"] and "group_member_limit" not in chosen:
            chosen["group_member_limit"] = chosen["group_member_tiers"][0]
    elif "group_member_limit" in chosen:
        base = int(chosen["group_member_limit"])
        pairs = [
            (tier, price)
            for tier, price in zip(
                current.group_member_tiers[1:], current.group_tier_prices, strict=False
            )
            if tier > base
        ]
        chosen["group_member_tiers"] = (base, *(tier for tier, _ in pairs))
        chosen.setdefault("group_tier_prices", tuple(price for _, price in pairs))


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
    _validate_hardening(config)
    _validate_ding(config)
    _validate_group_tiers(config)
    if config.live_max_cohosts < 0:
        raise ValueError("live_max_cohosts must not be negative")
    if min(config.live_grace_seconds, config.live_counts_seconds) <= 0:
        raise ValueError("live_grace_seconds and live_counts_seconds must be positive")
    if config.live_checkpoint_seconds <= 0:
        raise ValueError("live_checkpoint_seconds must be positive")
    if config.dissolution_chunk_rows < 1 or config.dissolution_pause_seconds < 0:
        raise ValueError(
            "dissolution_chunk_rows must be at least 1, dissolution_pause_seconds not negative"
        )


def _validate_hardening(config: Config) -> None:
    if config.send_queue_bytes < 64 * 1024:
        raise ValueError("send_queue_bytes must be at least 65536")
    if config.max_connections_per_user < 1 or config.max_connections < 1:
        raise ValueError("max_connections_per_user and max_connections must be at least 1")
    if config.flood_strikes < 1:
        raise ValueError("flood_strikes must be at least 1")
    if config.moderation_poll_seconds <= 0:
        raise ValueError("moderation_poll_seconds must be positive")
    if config.gc_old_threshold < 1:
        raise ValueError("gc_old_threshold must be at least 1")
    if config.metrics_port is not None and not 0 <= config.metrics_port <= 65535:
        raise ValueError("metrics_port must be 0-65535")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ValueError("give both tls_cert and tls_key, or neither")
    if config.sqlite_max_page_count is not None and config.sqlite_max_page_count < 1:
        raise ValueError("sqlite_max_page_count must be positive")
    for origin in config.allowed_origins:
        if origin != "*" and "://" not in origin:
            raise ValueError(f"allowed_origins: {origin!r} is not scheme://host[:port] or '*'")


def _validate_group_tiers(config: Config) -> None:
    """M2: ascending tiers from the base limit up to 10,000, one positive price per tier
    above the base, a positive period."""
    tiers, prices = config.group_member_tiers, config.group_tier_prices
    if not tiers or tiers[0] != config.group_member_limit:
        raise ValueError("group_member_tiers must start with group_member_limit")
    if config.group_member_limit < 1:
        raise ValueError("group_member_limit must be at least 1")
    if any(b <= a for a, b in itertools.pairwise(tiers)):
        raise ValueError("group_member_tiers must be strictly ascending")
    if tiers[-1] > limits.MAX_GROUP_MEMBER_LIMIT:
        raise ValueError(f"no group tier may exceed {limits.MAX_GROUP_MEMBER_LIMIT} members")
    if len(prices) != len(tiers) - 1 or any(p < 1 for p in prices):
        raise ValueError("group_tier_prices needs one positive price per tier after the first")
    if config.group_expansion_days <= 0:
        raise ValueError("group_expansion_days must be positive")


def _validate_ding(config: Config) -> None:
    if config.ding_redding_interval_seconds < 0:
        raise ValueError("ding_redding_interval_seconds must not be negative")
    if min(config.ding_personal_sms_per_month, config.ding_personal_calls_per_month) < 0:
        raise ValueError("the personal DING allowances must not be negative")
    if config.ding_recipient_per_minute <= 0 or config.ding_recipient_burst < 1:
        raise ValueError("ding_recipient_per_minute must be positive, ding_recipient_burst >= 1")
    try:
        ZoneInfo(config.ding_quota_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {config.ding_quota_timezone!r}") from None
    if config.notifier not in ("outbox", "webhook"):
        raise ValueError("notifier must be 'outbox' or 'webhook'")
    if config.notifier == "webhook":
        if not config.webhook_url.startswith(("http://", "https://")):
            raise ValueError("the webhook notifier needs webhook_url (http:// or https://)")
        if not config.webhook_secret:
            raise ValueError("the webhook notifier needs webhook_secret")
    if config.webhook_timeout_seconds <= 0 or config.webhook_max_attempts < 1:
        raise ValueError("webhook_timeout_seconds must be positive, webhook_max_attempts >= 1")
