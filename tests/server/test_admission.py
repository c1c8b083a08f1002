"""Refusals before the WebSocket upgrade, decided from the HTTP request alone."""

from __future__ import annotations

import pytest

from server.admission import origin_allowed, refuse_upgrade
from server.config import Config


def _refusal(
    path: str = "/",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    config: Config | None = None,
    open_connections: int = 0,
    draining: bool = False,
) -> tuple[int, str] | None:
    found = refuse_upgrade(
        path=path,
        headers=headers or [],
        config=config or Config(),
        open_connections=open_connections,
        draining=draining,
    )
    return None if found is None else (found.status, found.reason)


def test_a_native_client_without_origin_is_accepted() -> None:
    assert _refusal() is None


def test_cross_site_origin_is_refused_403_unless_allowed() -> None:
    evil = [(b"origin", b"https://evil.example")]
    assert _refusal(headers=evil) == (403, "origin")
    config = Config(allowed_origins=("https://chat.example.com",))
    assert _refusal(headers=evil, config=config) == (403, "origin")
    ours = [(b"origin", b"https://Chat.Example.com")]
    assert _refusal(headers=ours, config=config) is None
    assert _refusal(headers=evil, config=Config(allowed_origins=("*",))) is None


def test_two_origin_headers_are_refused() -> None:
    config = Config(allowed_origins=("https://a.example",))
    twice = [(b"origin", b"https://a.example"), (b"origin", b"https://b.example")]
    assert _refusal(headers=twice, config=config) == (403, "origin")


@pytest.mark.parametrize("path", ["/?token=v1.abc.def.ghi", "/?access_token=x", "/?"])
def test_a_query_string_is_refused_400_so_tokens_never_ride_in_urls(path: str) -> None:
    assert _refusal(path) == (400, "query_string")


def test_shutdown_and_capacity_are_503() -> None:
    assert _refusal(draining=True) == (503, "draining")
    full = Config(max_connections=3)
    assert _refusal(config=full, open_connections=3) == (503, "capacity")
    assert _refusal(config=full, open_connections=2) is None


def test_origin_matching_is_exact_on_scheme_host_and_port() -> None:
    allowed = ["https://chat.example.com"]
    assert origin_allowed(b"https://chat.example.com/", allowed)
    assert not origin_allowed(b"http://chat.example.com", allowed)
    assert not origin_allowed(b"https://chat.example.com:8443", allowed)
    assert not origin_allowed(b"https://chat.example.com.evil.example", allowed)
    assert not origin_allowed(b"null", allowed)


def test_config_refuses_a_malformed_origin() -> None:
    from server.config import load_config

    with pytest.raises(ValueError, match="allowed_origins"):
        load_config(allowed_origins=["chat.example.com"])
    assert load_config(allowed_origins=["https://a.example"]).allowed_origins == (
        "https://a.example",
    )
