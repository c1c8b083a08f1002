"""The whole protocol in one place: every request with its result type, every event.

The core ops live in ``requests.py``/``replies.py``/``events.py``; each feature keeps its
own module (one concept a file) and is added to the unions here. The codec, the router's
dispatch table, the client SDK and the docs test all read this catalog, so an op cannot be
decodable without also being documented and routed.
"""

from __future__ import annotations

from protocol import account, ding, enterprise, events, live, moderation, orgs, replies
from protocol import group_capacity as capacity
from protocol import requests as rq

AnyRequest = (
    rq.CoreRequest
    | ding.DingRequest
    | live.LiveRequest
    | moderation.Report
    | orgs.OrgRequest
    | account.AccountDelete
    | enterprise.EnterpriseRequest
    | capacity.GroupCapacityRequest
)

AnyEvent = events.CoreEvent | ding.DingEvents | live.LiveEvent | orgs.OrgEvent

#: The shape of ``ok.result`` for every op.
RESULT_TYPES: dict[type[rq.Request], type[replies.Result]] = {
    **replies.CORE_RESULT_TYPES,
    **ding.DING_RESULT_TYPES,
    **live.LIVE_RESULT_TYPES,
    **moderation.MODERATION_RESULT_TYPES,
    **orgs.ORG_RESULT_TYPES,
    **account.ACCOUNT_RESULT_TYPES,
    **enterprise.ENTERPRISE_RESULT_TYPES,
    **capacity.GROUP_CAPACITY_RESULT_TYPES,
}

#: Ops a connection may send before it is authenticated.
PRE_AUTH_OPS: frozenset[type[rq.Request]] = rq.PRE_AUTH_OPS | {enterprise.LoginEnterprise}
