"""The Notifier a server runs with, chosen by its configuration (``notifier``)."""

from __future__ import annotations

from server.clock import Clock
from server.config import Config
from server.notify.interface import Notifier
from server.notify.outbox import OutboxNotifier
from server.notify.webhook import WebhookNotifier


def notifier_from_config(config: Config, clock: Clock) -> Notifier:
    """``outbox`` (the default): ``<data_dir>/outbox.jsonl``; ``webhook``: signed POSTs to
    ``webhook_url`` (``validate`` has checked the URL and the secret)."""
    if config.notifier == "webhook":
        return WebhookNotifier(
            config.webhook_url,
            secret=config.webhook_secret,
            clock=clock,
            timeout=config.webhook_timeout_seconds,
            max_attempts=config.webhook_max_attempts,
        )
    return OutboxNotifier(config.data_dir, clock=clock)
