"""The set of stores a server runs on, one per data domain."""

from __future__ import annotations

from dataclasses import dataclass

from storage.interfaces import CrossDomainStore, PersonalStore


@dataclass(frozen=True, slots=True)
class Stores:
    """Personal (D1) and cross-domain (D3) stores. The organisation store (D2) joins them
    with the organisations issue. Each lives in its own database."""

    personal: PersonalStore
    cross: CrossDomainStore
