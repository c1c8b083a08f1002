"""An atheris (libFuzzer) target for the frame decoder, run on demand, never in CI:

    pip install -e '.[fuzz]'                      # atheris
    python tests/fuzz/fuzz_decoder.py -atheris_runs=2000000
    python tests/fuzz/fuzz_decoder.py CORPUS_DIR -max_total_time=600

Any libFuzzer flag works (``-max_len``, ``-jobs``, ``-dict``...). With a corpus directory
that does not exist yet, it is created and seeded with a valid frame of every op at its
lower and upper bounds, which the fuzzer then mutates.

The property is the decoder's contract (``protocol.codec``): whatever the bytes, the
decoder returns a typed request or raises ``ProtocolError`` with a documented code; nothing
else escapes, and a decoded request encodes and decodes back to itself. A crash, an
uncaught exception or a hang (libFuzzer's ``-timeout``, default 1200 s; pass e.g.
``-timeout=2``) is a finding; libFuzzer writes the input to ``crash-*``/``timeout-*``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    import msgspec

    from protocol import codec
    from protocol.errors import ERROR_INFO, ProtocolError


def test_one_input(data: bytes) -> None:
    try:
        request = codec.decode_request(data)
    except ProtocolError as error:
        if error.code not in ERROR_INFO:
            raise AssertionError(f"undocumented error code {error.code}") from None
    else:
        again = codec.decode_request(codec.encode_request(request))
        if again != request:
            raise AssertionError(f"round trip changed {request!r} into {again!r}")
    rid = codec.request_id_of(data)
    if rid is not None and not isinstance(rid, int):
        raise AssertionError(f"request_id_of returned {rid!r}")


def _seed(corpus: Path) -> None:
    """Valid frames of every request type, at both bounds of every field (a type whose
    bounds ``request_values`` cannot build yet is skipped)."""
    import typing

    from protocol.catalog import AnyRequest
    from tests.protocol.request_values import edge_frame

    seeds: dict[str, bytes] = {}
    for index, cls in enumerate(typing.get_args(AnyRequest)):
        for high in (False, True):
            try:
                seeds[f"seed-{index:03d}-{int(high)}"] = msgspec.msgpack.encode(
                    edge_frame(cls, high=high)
                )
            except (KeyError, AssertionError):
                continue
    corpus.mkdir(parents=True)
    for name, frame in seeds.items():
        (corpus / name).write_bytes(frame)


def main() -> None:
    for arg in sys.argv[1:]:
        if not arg.startswith("-") and not Path(arg).exists():
            _seed(Path(arg))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
