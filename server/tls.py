"""Built-in TLS (``--tls-cert``/``--tls-key``), so clients can use ``wss://`` without a proxy.

Python's defaults for a server context (``ssl.create_default_context(SERVER_AUTH)``'s
server-side twin): TLS 1.2 or newer, no compression, the library's cipher choice. The key
file must be readable only by the server's user; a missing or mismatched pair fails at
start-up, before anything listens.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server-side TLS context for the PEM certificate chain and private key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context
