"""The metrics text and the operations HTTP endpoint (/healthz, /metrics) on loopback."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import pytest
import trio

from server import ops_http
from server.metrics import Metrics, render
from server.ops_http import serve_ops_http, server_routes


def test_render_is_prometheus_text() -> None:
    metrics = Metrics()
    metrics.messages.inc(3)
    metrics.errors.inc(4000)
    metrics.errors.inc(4000)
    metrics.errors.inc(1000)
    metrics.closes.inc('we"ird')
    metrics.commit_seconds.observe(0.002)
    metrics.commit_seconds.observe(0.3)
    metrics.commit_seconds.observe(30.0)
    text = render(metrics, {"connections": ("Open connections.", 2)})
    lines = text.splitlines()
    assert "# TYPE rivet_connections gauge" in lines and "rivet_connections 2" in lines
    assert "# TYPE rivet_messages_total counter" in lines and "rivet_messages_total 3" in lines
    assert 'rivet_errors_total{code="4000"} 2' in lines
    assert 'rivet_errors_total{code="1000"} 1' in lines
    assert 'rivet_closes_total{code="we\\"ird"} 1' in lines
    assert "# TYPE rivet_commit_seconds histogram" in lines
    assert 'rivet_commit_seconds_bucket{le="0.0025"} 1' in lines
    assert 'rivet_commit_seconds_bucket{le="0.5"} 2' in lines
    assert 'rivet_commit_seconds_bucket{le="+Inf"} 3' in lines
    assert "rivet_commit_seconds_count 3" in lines
    for line in lines:
        assert line.startswith(("# HELP rivet_", "# TYPE rivet_", "rivet_")), line


@dataclass
class _FakeGateway:
    draining: bool = False
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "connections": 5,
            "authenticated": 4,
            "queued_frames": 7,
            "queued_bytes": 900,
            "max_queued_bytes": 600,
        }
    )

    def statistics(self) -> dict[str, int]:
        return self.stats


async def _http(port: int, raw: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    return data


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    data = await _http(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_healthz_and_metrics_answer_and_everything_else_is_refused(
    nursery: trio.Nursery,
) -> None:
    gateway = _FakeGateway()
    port = await nursery.start(partial(serve_ops_http, "127.0.0.1", 0, server_routes(gateway)))
    assert await _get(port, "/healthz") == (200, b"ok\n")
    status, body = await _get(port, "/metrics")
    assert status == 200
    assert b"rivet_connections 5\n" in body and b"rivet_send_queue_bytes_max 600\n" in body
    assert b"# TYPE rivet_requests_total counter" in body
    assert await _get(port, "/healthz", "HEAD") == (200, b"")
    assert (await _get(port, "/nope"))[0] == 404
    assert (await _get(port, "/metrics", "POST"))[0] == 405
    assert (await _http(port, b"\x00\x01 garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
    gateway.draining = True
    assert await _get(port, "/healthz") == (503, b"draining\n")


async def test_healthz_is_unavailable_while_a_store_reports_a_problem(
    nursery: trio.Nursery,
) -> None:
    """A dead store writer refuses every write: the health check says so (503), so an
    orchestrator restarts the instance rather than leave it answering 4004 for good."""
    found: list[str] = []
    routes = server_routes(_FakeGateway(), problems=lambda: list(found))
    port = await nursery.start(partial(serve_ops_http, "127.0.0.1", 0, routes))
    assert await _get(port, "/healthz") == (200, b"ok\n")
    found.append("the writer of cross.db stopped; writes to it are refused")
    assert await _get(port, "/healthz") == (
        503,
        b"unavailable: the writer of cross.db stopped; writes to it are refused\n",
    )


async def test_a_client_that_sends_nothing_is_dropped(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops_http, "REQUEST_TIMEOUT", 0.2)
    port = await nursery.start(
        partial(serve_ops_http, "127.0.0.1", 0, server_routes(_FakeGateway()))
    )
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        with trio.fail_after(5):
            assert await stream.receive_some(100) == b""  # closed by the server


async def test_g1_the_ding_machinery_shows_in_metrics(nursery: trio.Nursery) -> None:
    """The app passes the DING runtime's gauges; they are read at each scrape."""
    pending = {"value": 3.0}

    def gauges() -> dict[str, tuple[str, float]]:
        return {"ding_steps_pending": ("DING steps waiting.", pending["value"])}

    port = await nursery.start(
        partial(serve_ops_http, "127.0.0.1", 0, server_routes(_FakeGateway(), gauges))
    )
    assert b"rivet_ding_steps_pending 3" in (await _get(port, "/metrics"))[1]
    pending["value"] = 0.0
    assert b"rivet_ding_steps_pending 0" in (await _get(port, "/metrics"))[1]
