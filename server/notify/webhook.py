"""WebhookNotifier: each notification is one signed JSON POST to a gateway's URL.

For real SMS and voice gateways (and login codes and pushes, so one gateway can do all).
The body is a JSON object: ``kind`` (``sms``, ``call``, ``login_code``, ``push``), ``time``
(ms since the epoch), then the call's keyword arguments, ``idempotency_key`` included.
Headers:

* ``X-Rivet-Signature: sha256=<hex>``: HMAC-SHA256 of the exact body bytes with the shared
  secret; the gateway recomputes it and compares in constant time.
* ``Idempotency-Key``: the notification's key (a fresh random one for codes and pushes),
  the same on every retry and after a restart of Rivet: the gateway sends one SMS or call
  per key.

A 2xx answer means accepted. A 5xx, 408 or 429 answer, a timeout or a connection failure
is retried with exponential backoff (``backoff * 2**n``) up to ``max_attempts`` attempts,
then ``NotifyError(retryable=True)``; any other answer is ``NotifyError(retryable=False)``
at once. The HTTP client is a small HTTP/1.1 one on trio streams (h11, which wsproto
already brings), one connection per request; ``https://`` URLs use the system's CA store.
Nothing secret is logged: not the code, not the body, not the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import msgspec
import trio

from server.clock import Clock, SystemClock
from server.notify.interface import NotifyError

SIGNATURE_HEADER = "X-Rivet-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Largest response body read (a gateway's answer is not used beyond its status).
MAX_RESPONSE_BYTES = 64 * 1024
_RETRY_STATUSES = frozenset({408, 429})


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookStatistics:
    accepted: int
    attempts: int
    failed: int


class _Transient(Exception):
    """One attempt failed in a way worth retrying."""


class WebhookNotifier:
    def __init__(
        self,
        url: str,
        *,
        secret: str | bytes,
        clock: Clock | None = None,
        timeout: float = 10.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the webhook URL must be http:// or https:// with a host")
        if not secret:
            raise ValueError("the webhook needs a secret")
        if max_attempts < 1 or timeout <= 0:
            raise ValueError("max_attempts must be at least 1 and timeout positive")
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._host_header = parts.netloc.rpartition("@")[2]
        self._clock: Clock = clock or SystemClock()
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._ssl = ssl_context
        self._accepted = 0
        self._attempts = 0
        self._failed = 0

    async def send_login_code(self, *, phone: str, code: str) -> None:
        await self._post("login_code", uuid.uuid4().hex, {"phone": phone, "code": code})

    async def push(self, *, user_id: int, device_id: int, title: str, body: str, conv: str) -> None:
        fields = {
            "user_id": user_id,
            "device_id": device_id,
            "title": title,
            "body": body,
            "conv": conv,
        }
        await self._post("push", uuid.uuid4().hex, fields)

    async def send_sms(self, *, phone: str, text: str, idempotency_key: str) -> None:
        await self._post("sms", idempotency_key, {"phone": phone, "text": text})

    async def place_call(self, *, phone: str, text: str, idempotency_key: str) -> None:
        await self._post("call", idempotency_key, {"phone": phone, "text": text})

    def statistics(self) -> WebhookStatistics:
        return WebhookStatistics(
            accepted=self._accepted, attempts=self._attempts, failed=self._failed
        )

    async def _post(self, kind: str, key: str, fields: dict[str, Any]) -> None:
        payload = {"kind": kind, "time": self._clock.now_ms(), **fields, "idempotency_key": key}
        body = msgspec.json.encode(payload)
        headers = [
            ("Host", self._host_header),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            (SIGNATURE_HEADER, sign(self._secret, body)),
            (IDEMPOTENCY_HEADER, key),
            ("User-Agent", "rivet-webhook/1"),
            ("Connection", "close"),
        ]
        last = ""
        for attempt in range(self._max_attempts):
            if attempt:
                await trio.sleep(self._backoff * 2 ** (attempt - 1))
            self._attempts += 1
            try:
                with trio.fail_after(self._timeout):
                    status = await self._request(headers, body)
            except (trio.TooSlowError, OSError, h11.ProtocolError, _Transient) as error:
                last = type(error).__name__
                continue
            if 200 <= status < 300:
                self._accepted += 1
                return
            if status >= 500 or status in _RETRY_STATUSES:
                last = f"HTTP {status}"
                continue
            self._failed += 1
            raise NotifyError(f"the webhook refused the {kind} with HTTP {status}", retryable=False)
        self._failed += 1
        raise NotifyError(f"the webhook did not accept the {kind} after retries ({last})")

    async def _request(self, headers: list[tuple[str, str]], body: bytes) -> int:
        """One POST on a fresh connection; the response's status code."""
        stream: trio.abc.Stream = await trio.open_tcp_stream(self._host, self._port)
        if self._https:
            context = self._ssl or ssl.create_default_context()
            stream = trio.SSLStream(stream, context, server_hostname=self._host)
        async with stream:
            conn = h11.Connection(our_role=h11.CLIENT)
            request = h11.Request(method="POST", target=self._target, headers=headers)
            await stream.send_all(conn.send(request) + conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            status: int | None = None
            received = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(16 * 1024)
                    conn.receive_data(bytes(data))
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    received += len(event.data)
                    if received > MAX_RESPONSE_BYTES:
                        break
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            if status is None:
                raise _Transient("no response")
            return status
