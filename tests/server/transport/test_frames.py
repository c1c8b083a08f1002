"""``server.transport.frames``: our data frames are wsproto's, built once per payload."""

from __future__ import annotations

import pytest
from wsproto.frame_protocol import FrameProtocol

from server.transport.frames import OPCODE_TEXT, frame, frame_header


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frames_match_wsproto(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = bytes(FrameProtocol(client=False, extensions=[]).send_data(payload))
    assert frame(payload) == expected
    assert frame(payload) is frame(payload)  # built once per payload object


def test_a_text_header() -> None:
    assert frame_header(5) == b"\x82\x05"
    expected = bytes(FrameProtocol(client=False, extensions=[]).send_data("hello"))
    assert frame_header(5, opcode=OPCODE_TEXT) + b"hello" == expected
