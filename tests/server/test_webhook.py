"""The webhook Notifier against a local HTTP gateway on 127.0.0.1: signed JSON bodies, the
idempotency key header, retries with backoff on 5xx, 429 and timeouts, and no retry of a
refusal. The Notifier conformance suite runs on it too (``test_notify.py``)."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
import trio

from server.clock import ManualClock
from server.config import Config
from server.notify.factory import notifier_from_config
from server.notify.interface import NotifyError
from server.notify.outbox import OutboxNotifier
from server.notify.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, WebhookNotifier, sign
from tests.webhook_gateway import Gateway

SECRET = "s3cret"


def expected_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


async def start(nursery: trio.Nursery, **kwargs: int) -> Gateway:
    gateway = Gateway(**kwargs)
    await nursery.start(gateway.serve)
    return gateway


async def test_g1_sms_is_a_signed_json_post_with_the_idempotency_key(
    nursery: trio.Nursery,
) -> None:
    gateway = await start(nursery)
    clock = ManualClock()
    notifier = WebhookNotifier(gateway.url, secret=SECRET, clock=clock)
    await notifier.send_sms(phone="+15550100", text="DING from A: fire", idempotency_key="k-1")
    await notifier.place_call(phone="+15550101", text="urgent", idempotency_key="k-2")
    first, second = gateway.received
    assert first.target == "/hook"
    assert first.headers["content-type"] == "application/json"
    assert first.headers[SIGNATURE_HEADER.lower()] == expected_signature(first.body)
    assert first.headers[IDEMPOTENCY_HEADER.lower()] == "k-1"
    assert first.json == {
        "kind": "sms",
        "time": clock.now_ms(),
        "phone": "+15550100",
        "text": "DING from A: fire",
        "idempotency_key": "k-1",
    }
    assert second.json["kind"] == "call" and second.headers["idempotency-key"] == "k-2"
    assert sign(SECRET.encode(), second.body) == second.headers["x-rivet-signature"]
    assert notifier.statistics().accepted == 2


async def test_5xx_and_429_are_retried_with_the_same_key(nursery: trio.Nursery) -> None:
    gateway = await start(nursery, fail=3)
    notifier = WebhookNotifier(gateway.url, secret=SECRET, backoff=0.05, max_attempts=5)
    started = trio.current_time()
    await notifier.send_sms(phone="+15550100", text="x", idempotency_key="same")
    assert [r.headers["idempotency-key"] for r in gateway.received] == ["same"] * 4
    assert len({r.body for r in gateway.received}) == 1  # the very same request each time
    assert trio.current_time() - started >= 0.05 + 0.1 + 0.2  # backoff doubles
    limited = await start(nursery, fail=1, fail_status=429)
    other = WebhookNotifier(limited.url, secret=SECRET, backoff=0.01)
    await other.send_sms(phone="+15550100", text="x", idempotency_key="k")
    assert len(limited.received) == 2


async def test_gives_up_after_max_attempts_with_a_retryable_error(nursery: trio.Nursery) -> None:
    gateway = await start(nursery, fail=10)
    notifier = WebhookNotifier(gateway.url, secret=SECRET, backoff=0.01, max_attempts=3)
    with pytest.raises(NotifyError) as caught:
        await notifier.send_sms(phone="+15550100", text="x", idempotency_key="k")
    assert caught.value.retryable and len(gateway.received) == 3
    assert notifier.statistics().failed == 1


async def test_a_4xx_refusal_is_not_retried(nursery: trio.Nursery) -> None:
    gateway = await start(nursery, fail=1, fail_status=400)
    notifier = WebhookNotifier(gateway.url, secret=SECRET, backoff=0.01)
    with pytest.raises(NotifyError) as caught:
        await notifier.place_call(phone="+15550100", text="x", idempotency_key="k")
    assert not caught.value.retryable and len(gateway.received) == 1


async def test_a_gateway_that_does_not_answer_times_out_and_is_retried(
    nursery: trio.Nursery,
) -> None:
    gateway = await start(nursery, hang=1)
    notifier = WebhookNotifier(gateway.url, secret=SECRET, timeout=0.3, backoff=0.01)
    await notifier.send_sms(phone="+15550100", text="x", idempotency_key="k")
    assert len(gateway.received) == 2


async def test_an_unreachable_gateway_is_a_retryable_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()  # nothing listens there now: connection refused
    notifier = WebhookNotifier(
        f"http://127.0.0.1:{port}/", secret=SECRET, backoff=0.01, max_attempts=2
    )
    with pytest.raises(NotifyError) as caught:
        await notifier.send_sms(phone="+15550100", text="x", idempotency_key="k")
    assert caught.value.retryable


async def test_login_codes_and_pushes_go_through_the_webhook_too(nursery: trio.Nursery) -> None:
    gateway = await start(nursery)
    notifier = WebhookNotifier(gateway.url, secret=SECRET)
    await notifier.send_login_code(phone="+15550100", code="123456")
    await notifier.push(user_id=1, device_id=2, title="t", body="b", conv="s:1")
    kinds = [json.loads(r.body)["kind"] for r in gateway.received]
    assert kinds == ["login_code", "push"]
    keys = [r.headers["idempotency-key"] for r in gateway.received]
    assert len(set(keys)) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ftp://example.com/", "secret": "x"},
        {"url": "http:///nohost", "secret": "x"},
        {"url": "http://127.0.0.1/", "secret": ""},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        WebhookNotifier(kwargs["url"], secret=kwargs["secret"])


def test_the_configuration_picks_the_notifier(tmp_path: Path) -> None:
    outbox = notifier_from_config(Config(data_dir=tmp_path), ManualClock())
    assert isinstance(outbox, OutboxNotifier)
    config = Config(
        data_dir=tmp_path, notifier="webhook", webhook_url="http://127.0.0.1:1/", webhook_secret="x"
    )
    assert isinstance(notifier_from_config(config, ManualClock()), WebhookNotifier)
    assert "webhook_secret" not in repr(config)
