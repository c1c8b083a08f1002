"""The Rivet client SDK for trio: connect, log in, resume by sync token, de-duplicate,
resend unacknowledged messages. Tests, the bench harness and users share it."""

from client.client import RivetClient
from client.connection import RivetConnection, RivetError
from client.dedup import Deduper
from client.state import ClientState

__all__ = ["ClientState", "Deduper", "RivetClient", "RivetConnection", "RivetError"]
