"""A2 in the logs without a network: the handler's filter masks secrets and content whatever
the logger, in text and JSON."""

from __future__ import annotations

import io
import json
import logging

import pytest

from server.logs import JsonFormatter, Redactor, TextFormatter

ACCESS = "v1.3f2a9c1b0d4e.eyJ1IjoxLCJkIjoxLCJnIjowLCJlIjoxfQ.c2lnbmF0dXJlc2lnbmF0dXJl"
REFRESH = "r1.Zk9xYW1wbGUxMg.QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE"


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter("%(message)s")])
def test_a2_tokens_content_and_codes_never_reach_the_output(formatter: logging.Formatter) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(Redactor())
    logger = logging.getLogger("tests.logs.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "hello with %s", ACCESS, extra={"text": "my secret message", "code": "123456"}
        )
        logger.warning("refresh", extra={"refresh_token": REFRESH, "note": "a report note"})
        logger.warning("closed", extra={"code": 4050, "conv": "g:7"})
        try:
            raise ValueError(f"bad token {REFRESH}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    for secret in (ACCESS, REFRESH, "my secret message", "123456", "a report note"):
        assert secret not in text
    assert "[redacted]" in text and "4050" in text and "g:7" in text
    if isinstance(formatter, JsonFormatter):
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert [line["msg"] for line in lines][:3] == ["hello with [redacted]", "refresh", "closed"]
