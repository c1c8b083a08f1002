"""Personal account deletion (A1)."""

from __future__ import annotations

from protocol.replies import Done, Result
from protocol.requests import Request


class AccountDelete(Request, tag="account.delete", frozen=True):
    """Delete the caller's personal account (A1): every session ends at once, the phone
    number is free again, and a job erases the personal data and tombstones everything the
    user wrote in cross-domain conversations (seqs stay). Organisations' copies stay with
    them. Leave every organisation, and hand over every group you own, first."""


ACCOUNT_RESULT_TYPES: dict[type[Request], type[Result]] = {AccountDelete: Done}
