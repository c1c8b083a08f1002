"""Rivet's server-side WebSocket transport, on trio and wsproto.

wsproto does the protocol: it parses the HTTP upgrade (``H11Handshake``) and the frames
(``wsproto.connection.Connection``: bytes in, typed events out; control frames out) and
tracks the closing handshake. We do the I/O and the policy around it, in the gateway's
one task per connection: ``listener`` accepts (TCP, TLS) and starts that task;
``handshake`` reads and answers the upgrade; ``websocket`` is the open connection (reads
in the caller's task, writes under one lock, pre-built frames straight to the socket);
``frames`` builds server-to-client data frames once for every recipient.
"""

from server.transport.websocket import ConnectionClosed, WebSocket

__all__ = ["ConnectionClosed", "WebSocket"]
