"""Running Rivet as an operator does: the CLI, the config file, and graceful shutdown."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import trio

from client import RivetClient
from client.connection import ConnectionLost
from protocol import requests as rq
from protocol.errors import CloseCode
from tests.e2e.processes import RIVET, create_users, rivet_server


async def test_sigterm_closes_connections_with_1001_and_exits_0(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (alice,) = create_users(data, 1)
    async with rivet_server(data) as (process, url):
        async with RivetClient.connect(url, alice) as a:
            ack = await a.send(f"s:{alice.user_id}", "before shutdown")
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await a.conn.closed.wait()
            assert a.conn.close_code == CloseCode.GOING_AWAY
        with trio.fail_after(10):
            await process.wait()
        assert process.returncode == 0
    # The acknowledged message is there after a restart.
    async with rivet_server(data) as (_, url), RivetClient.connect(url, alice) as a:
        history = await a.request(rq.MsgHistory(rid=0, conv=ack.conv))
        assert [(m.seq, m.content.text if m.content else None) for m in history.messages] == [
            (ack.seq, "before shutdown")
        ]


async def test_requests_after_the_close_fail_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (alice,) = create_users(data, 1)
    async with rivet_server(data) as (process, url), RivetClient.connect(url, alice) as a:
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            await a.conn.closed.wait()
        try:
            await a.send(f"s:{alice.user_id}", "too late")
        except ConnectionLost as lost:
            assert lost.retryable
        else:
            raise AssertionError("a send on a closed connection must fail")
        assert [r.content.text for r in alice.unacked.values()] == ["too late"]  # kept


def test_cli_users_create_prints_a_working_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = subprocess.run(
        [
            *RIVET,
            "users",
            "create",
            "--data-dir",
            str(data),
            "--phone",
            "+15550009999",
            "--name",
            "Operator",
            "--token",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    created = json.loads(out.stdout)
    assert created["user_id"] == 1 and created["access_token"].startswith("v1.")
    again = subprocess.run(
        [*RIVET, "users", "create", "--data-dir", str(data), "--phone", "+15550009999"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(again.stdout)["user_id"] == 1  # same phone, same user


async def test_login_code_goes_to_the_outbox_and_rivet_outbox_shows_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with rivet_server(data) as (_, url):
        await RivetClient.request_code(url, phone="+15550001234")
        shown = await trio.run_process(
            [*RIVET, "outbox", "--data-dir", str(data), "--kind", "login_code", "--last", "1"],
            capture_stdout=True,
        )
        record = json.loads(shown.stdout)
        assert record["phone"] == "+15550001234"
        state = await RivetClient.login(url, phone="+15550001234", code=record["code"])
        assert state.user_id == 1
    assert (data / "outbox.jsonl").stat().st_mode & 0o077 == 0  # owner-only


def test_serve_help_documents_every_flag() -> None:
    out = subprocess.run(
        [*RIVET, "serve", "--help"], check=True, capture_output=True, text=True, timeout=60
    )
    for flag in ("--host", "--port", "--data-dir", "--config", "--store", "--sqlite-synchronous"):
        assert flag in out.stdout


async def test_toml_config_file_is_read_and_flags_override_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "rivet.toml"
    config.write_text('[server]\nstore = "memory"\ngroup_member_limit = 3\n')
    async with rivet_server(data, "--config", str(config), "--group-member-limit", "4") as (_, url):
        state = await _login(url, data)
        async with RivetClient.connect(url, state) as client:
            assert client.session is not None
            assert client.session.limits.group_member_limit == 4


async def _login(url: str, data: Path) -> object:
    await RivetClient.request_code(url, phone="+15550004321")
    for _ in range(100):
        lines = (
            (data / "outbox.jsonl").read_text().splitlines()
            if (data / "outbox.jsonl").exists()
            else []
        )
        if lines:
            break
        await trio.sleep(0.05)
    code = json.loads(lines[-1])["code"]
    return await RivetClient.login(url, phone="+15550004321", code=code)


def test_bad_config_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    config = tmp_path / "rivet.toml"
    config.write_text('store = "floppy"\n')
    out = subprocess.run(
        [*RIVET, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "store must be" in out.stderr


async def test_sigterm_does_not_wait_for_connections_still_in_their_upgrade(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    create_users(data, 1)
    async with rivet_server(data, "--handshake-deadline", "30") as (process, url):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        stream = await trio.open_tcp_stream("127.0.0.1", port)  # never sends the upgrade
        try:
            started = trio.current_time()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await process.wait()
            assert process.returncode == 0
            assert trio.current_time() - started < 10
        finally:
            await stream.aclose()
