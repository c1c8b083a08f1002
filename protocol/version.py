"""The protocol version spoken by this code. The handshake refuses any other (close 4002)."""

PROTOCOL_VERSION = 1
