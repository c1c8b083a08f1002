"""D2/D3: which store keeps a conversation.

The conversation id decides (``protocol/ids.py``): ``o:<organisation id>:...`` is an
organisation-internal conversation among that organisation's enterprise accounts, kept in
the organisation conversations store; every other id is cross-domain. Services never pick a
conversation store on their own: they ask here, so the placement rule has one home.
"""

from __future__ import annotations

from protocol.ids import conversation_org
from storage.interfaces import CrossDomainStore
from storage.stores import Stores


def conversation_store(stores: Stores, conv_id: str) -> CrossDomainStore:
    """The store that keeps ``conv_id``."""
    return stores.cross if conversation_org(conv_id) is None else stores.org_conversations
