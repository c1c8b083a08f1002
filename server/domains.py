"""D2/D3: which store keeps a conversation.

The conversation id decides (``protocol/ids.py``): ``o:<organisation id>:...`` is an
organisation-internal conversation among that organisation's enterprise accounts, kept in
the organisation conversations store; every other id is cross-domain. The decision is the
policy module's (``policy.store_for``); this maps it to a store. Services never pick a
conversation store on their own: they ask here.
"""

from __future__ import annotations

from server import policy
from storage.interfaces import CrossDomainStore
from storage.stores import Stores


def conversation_store(stores: Stores, conv_id: str) -> CrossDomainStore:
    """The store that keeps ``conv_id``."""
    if policy.store_for(conv_id) == "organisation":
        return stores.org_conversations
    return stores.cross
