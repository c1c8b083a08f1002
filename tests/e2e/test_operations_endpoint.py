"""Operations: /healthz and /metrics on their own loopback port, and structured logs that
never carry message content, one-time codes, passwords or tokens (A2)."""

from __future__ import annotations

import json
import re
import socket
from functools import partial
from pathlib import Path

import msgspec
import pytest
import trio

from client import RivetClient, RivetError
from protocol import requests as rq
from protocol.ids import direct_conversation_id
from protocol.moderation import Report
from server.app import RunningServer, serve
from server.notify.memory import MemoryNotifier
from tests.e2e.conftest import Harness, make_config
from tests.e2e.processes import rivet_server
from tests.e2e.test_malformed import authed, raw, reply


async def http_get(port: int, path: str) -> tuple[int, str]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


async def test_metrics_count_connections_messages_deliveries_and_errors(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    notifier = MemoryNotifier()
    config = make_config(tmp_path, store="sqlite", metrics_port=0)
    running: RunningServer = await nursery.start(partial(serve, config, notifier=notifier))
    harness = Harness(running, notifier)
    assert running.metrics_port is not None
    port = running.metrics_port
    assert await http_get(port, "/healthz") == (200, "ok\n")
    _, before = await http_get(port, "/metrics")
    alice, bob = await harness.new_user(), await harness.new_user()
    conv = direct_conversation_id(alice.user_id or 0, bob.user_id or 0)
    async with RivetClient.connect(harness.url, alice) as a, RivetClient.connect(harness.url, bob):
        for i in range(5):
            await a.send(conv, f"m{i}")
        await a.send(conv, "m0", cmid="same")
        await a.send(conv, "m0", cmid="same")  # a duplicate
        async with raw(harness.url) as ws:
            assert alice.access_token
            await authed(harness.url, alice.access_token, ws)
            await ws.send_message(b"\xc1")
            assert (await reply(ws))["code"] == 1000
            status, text = await http_get(port, "/metrics")
            assert status == 200
            assert metric(text, "rivet_connections") == 3
            assert metric(text, "rivet_authenticated_connections") == 3
    assert metric(text, "rivet_messages_total") - metric(before, "rivet_messages_total") == 6
    assert metric(text, "rivet_duplicate_sends_total") >= 1
    assert metric(text, 'rivet_errors_total{code="1000"}') >= 1
    assert metric(text, "rivet_commit_seconds_count") >= 7
    assert metric(text, 'rivet_commit_seconds_bucket{le="+Inf"}') >= 7
    assert metric(text, "rivet_deliveries_total") >= 6
    assert "rivet_send_queue_bytes " in text and "rivet_send_queue_bytes_max " in text
    # G1: the DING machinery's gauges (nothing pending in this run).
    assert metric(text, "rivet_ding_steps_pending") == 0
    assert metric(text, "rivet_ding_units_refunded") == 0
    assert "rivet_ding_steps_in_flight " in text and "rivet_ding_steps_sent " in text
    running.shutdown()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_json_logs_never_contain_content_codes_or_tokens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log_path = tmp_path / "server.log"
    metrics_port = _free_port()
    secrets: list[str] = []
    with log_path.open("wb") as log_file:
        async with rivet_server(
            data,
            "--log-format", "json", "--log-level", "DEBUG",
            "--metrics-port", str(metrics_port),
            stderr=log_file,
        ) as (_, url):  # fmt: skip
            phone = "+15550007777"
            await RivetClient.request_code(url, phone=phone)
            code = await _code_from_outbox(data)
            state = await RivetClient.login(url, phone=phone, code=code)
            peer_phone = "+15550007778"
            await RivetClient.request_code(url, phone=peer_phone)
            peer_code = await _code_from_outbox(data)
            peer = await RivetClient.login(url, phone=peer_phone, code=peer_code)
            assert state.access_token and state.refresh_token and peer.user_id
            secrets += [code, peer_code, state.access_token, state.refresh_token]
            conv = direct_conversation_id(state.user_id or 0, peer.user_id)
            async with RivetClient.connect(url, state) as client:
                await client.send(conv, "TOPSECRET-CONTENT-42")
                await client.request(
                    Report(rid=0, user=peer.user_id, reason="other", note="TOPSECRET-NOTE-7")
                )
                refreshed = await client.request(
                    rq.TokenRefresh(rid=0, refresh_token=state.refresh_token)
                )
                secrets += [refreshed.access_token, refreshed.refresh_token]
                # A reused refresh token is refused, and must not be logged either.
                with pytest.raises(RivetError):
                    await client.request(rq.TokenRefresh(rid=0, refresh_token=state.refresh_token))
            status, _ = await http_get(metrics_port, "/metrics")
            assert status == 200
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    for line in lines:
        record = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(record)
    assert any(json.loads(line)["msg"] == "report received" for line in lines)
    for secret in [*secrets, "TOPSECRET-CONTENT-42", "TOPSECRET-NOTE-7"]:
        assert secret not in text, f"{secret[:12]}... leaked into the log"


async def _code_from_outbox(data: Path) -> str:
    outbox = data / "outbox.jsonl"
    with trio.fail_after(5):
        while True:
            if outbox.exists():
                lines = outbox.read_text().splitlines()
                if lines:
                    code = msgspec.json.decode(lines[-1])["code"]
                    assert isinstance(code, str)
                    return code
            await trio.sleep(0.05)
