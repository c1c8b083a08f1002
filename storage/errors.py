"""Errors a store raises. The router maps each to a protocol error code."""


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class IdempotencyConflict(StoreError):
    """The idempotency key was used before with a different fingerprint (other content or
    another conversation)."""


class ConversationMissing(StoreError):
    """The conversation does not exist (and the write did not ask to create it)."""


class NotAMember(StoreError):
    """A precondition named a user who is not a current member at commit time."""


class AlreadyExists(StoreError):
    """A unique key is taken (a phone number, a user id, a conversation id)."""


class StorageFull(StoreError):
    """The write did not land because the disk or the database is full. Nothing of it is
    stored; the caller may retry later."""


class StoreClosed(StoreError):
    """The store was closed, or is closing, and takes no more writes."""


class StoreUnavailable(StoreError):
    """The store stopped taking writes after an internal failure (its writer died); it
    refuses every write until the server restarts. ``stored`` is False when nothing of the
    write was stored, None when its transaction's outcome is unknown (the writer died while
    running it): a retry must be idempotent."""

    def __init__(self, message: str, *, stored: bool | None = None) -> None:
        super().__init__(message)
        self.stored = stored
