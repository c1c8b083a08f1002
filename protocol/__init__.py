"""Rivet's wire protocol, sans-I/O: bytes in, typed messages out, bytes out.

Nothing in this package imports trio, sockets or storage (house habit 1). The server, the
client SDK and the bench load generator all share these definitions.
"""

from protocol.version import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]
