"""The SQLite ``DingStore`` (G1-G3), in ``cross.db`` next to the conversations it serves.

Schema: ``migrations/cross/0004_ding.sql`` (and later ``cross`` migrations, e.g.
``0009_ding_effects.sql``). Every write is one named transaction on the
database's writer thread (group commit, durable before it returns): the hand-over of a step
and its outbox row, a confirm and the withdrawal of its steps, a charge and its step, each
commit together or not at all. Scheduled steps have a partial index in due order, so the
scheduler pages through them without touching finished ones.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from msgspec.structs import replace

from storage.ding_records import (
    CHANNEL_ORDER,
    STEP_TRANSITIONS,
    ChannelName,
    ChargeOutcome,
    Ding,
    DingCreated,
    DingDomain,
    DingRecipient,
    DingStep,
    HandOver,
    NewDing,
    NewStep,
    OutboxItem,
    PendingDingEffect,
    QuotaBalance,
    QuotaCharge,
    StepChange,
    StepCharge,
    StepStateName,
    TopUp,
    step_idempotency_key,
)
from storage.errors import IdempotencyConflict
from storage.records import IdempotencyKey
from storage.sqlite.database import Database

_DING_COLUMNS: Final = (
    "ding_id, sender, payer, text, cmid, state, created_at, send_at, sms_after_s, call_after_s,"
    " round, round_at, sealed"
)
_STEP_COLUMNS: Final = "step_id, ding_id, user_id, channel, round, due_at, state, changed_at"
_SELECT_STEP: Final = f"SELECT {_STEP_COLUMNS} FROM ding_steps"
#: The quota tables and their primary keys, in the order an organisation's package goes.
_QUOTA_KEYS: Final = (
    ("quota_charges", "charge_key"),
    ("quota_usage", "account, channel, period, member"),
    ("quota_topups", "sender, client_id"),
    ("quota_balances", "account, channel, period"),
)
#: SQLite's default limit on host parameters is 32766; stay well below it.
_CHUNK: Final = 500


def _ding_header(row: Any, domain: DingDomain) -> Ding:
    *header, sealed = row
    (ding_id, sender, payer, text, cmid, state, created, send_at, sms, call, round_, at) = header
    return Ding(
        ding_id=ding_id,
        sender=sender,
        payer=payer,
        text=text,
        cmid=cmid,
        state=state,
        created_at=created,
        send_at=send_at,
        sms_after_s=sms,
        call_after_s=call,
        round=round_,
        round_at=at,
        sealed=None if sealed is None else bytes(sealed),
        domain=domain,
    )


def _step_of(row: Any) -> DingStep:
    step_id, ding_id, user_id, channel, round_, due_at, state, changed_at = row
    return DingStep(
        step_id=step_id,
        ding_id=ding_id,
        user_id=user_id,
        channel=channel,
        round=round_,
        due_at=due_at,
        state=state,
        changed_at=changed_at,
    )


def _fetch_dings(
    conn: sqlite3.Connection, domain: DingDomain, ding_ids: Sequence[int]
) -> list[Ding]:
    """The DINGs among ``ding_ids`` with recipients and steps, in the order given."""
    found: dict[int, Ding] = {}
    recipients: dict[int, list[DingRecipient]] = {}
    steps: dict[tuple[int, int], list[DingStep]] = {}
    for chunk in _chunks(ding_ids):
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT {_DING_COLUMNS} FROM dings WHERE ding_id IN ({marks})", chunk
        ):
            found[row[0]] = _ding_header(row, domain)
        for ding_id, user_id, delivered, read, confirmed in conn.execute(
            "SELECT ding_id, user_id, delivered_at, read_at, confirmed_at FROM ding_recipients"
            f" WHERE ding_id IN ({marks}) ORDER BY ding_id, user_id",
            chunk,
        ):
            recipients.setdefault(ding_id, []).append(
                DingRecipient(
                    user_id=user_id, delivered_at=delivered, read_at=read, confirmed_at=confirmed
                )
            )
        for row in conn.execute(
            f"{_SELECT_STEP} WHERE ding_id IN ({marks}) ORDER BY step_id", chunk
        ):
            step = _step_of(row)
            steps.setdefault((step.ding_id, step.user_id), []).append(step)
    result = []
    for ding_id in ding_ids:
        ding = found.get(ding_id)
        if ding is None:
            continue
        rows = tuple(
            DingRecipient(
                user_id=r.user_id,
                delivered_at=r.delivered_at,
                read_at=r.read_at,
                confirmed_at=r.confirmed_at,
                steps=tuple(steps.get((ding_id, r.user_id), ())),
            )
            for r in recipients.get(ding_id, ())
        )
        result.append(replace(ding, recipients=rows))
    return result


def _fetch_ding(conn: sqlite3.Connection, domain: DingDomain, ding_id: int) -> Ding | None:
    found = _fetch_dings(conn, domain, [ding_id])
    return found[0] if found else None


def _changes(
    conn: sqlite3.Connection, domain: DingDomain, pairs: Iterable[tuple[int, int]]
) -> list[StepChange]:
    pairs = list(pairs)
    ids = list(dict.fromkeys(p[0] for p in pairs))
    dings = {d.ding_id: d for d in _fetch_dings(conn, domain, ids)}
    return [StepChange(ding=dings[ding_id], user_id=user) for ding_id, user in pairs]


def _change(conn: sqlite3.Connection, domain: DingDomain, ding_id: int, user_id: int) -> StepChange:
    return _changes(conn, domain, [(ding_id, user_id)])[0]


def _chunks(values: Sequence[int]) -> Iterable[list[int]]:
    items = list(values)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _move(conn: sqlite3.Connection, step: DingStep, state: StepStateName, now: int) -> DingStep:
    if state not in STEP_TRANSITIONS[step.state]:
        raise ValueError(f"step {step.step_id}: {step.state} -> {state} is no transition")
    conn.execute(
        "UPDATE ding_steps SET state = ?, changed_at = ? WHERE step_id = ?",
        (state, now, step.step_id),
    )
    return DingStep(
        step_id=step.step_id,
        ding_id=step.ding_id,
        user_id=step.user_id,
        channel=step.channel,
        round=step.round,
        due_at=step.due_at,
        state=state,
        changed_at=now,
    )


def _insert_steps(
    conn: sqlite3.Connection, ding_id: int, steps: Sequence[NewStep], *, round_: int, now: int
) -> None:
    conn.executemany(
        "INSERT INTO ding_steps (ding_id, user_id, channel, round, due_at, state, changed_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                ding_id,
                s.user_id,
                s.channel,
                round_,
                s.due_at,
                s.state,
                now if s.state == "sent" else None,
            )
            for s in steps
        ],
    )


def _steps_in(conn: sqlite3.Connection, step_ids: Sequence[int]) -> list[DingStep]:
    found: list[DingStep] = []
    for chunk in _chunks(sorted(set(step_ids))):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(f"{_SELECT_STEP} WHERE step_id IN ({marks})", chunk)
        found.extend(_step_of(row) for row in rows)
    return sorted(found, key=lambda s: s.step_id)


def _charge(conn: sqlite3.Connection, charge: QuotaCharge) -> bool:
    """Take one unit of the balance (created with its grant on first use); False if none is
    left."""
    key = (charge.account, charge.channel, charge.period)
    conn.execute(
        "INSERT OR IGNORE INTO quota_balances (account, channel, period, granted, used)"
        " VALUES (?, ?, ?, ?, 0)",
        (*key, charge.grant),
    )
    taken = conn.execute(
        "UPDATE quota_balances SET used = used + 1"
        " WHERE account = ? AND channel = ? AND period = ? AND used < granted",
        key,
    ).rowcount
    if not taken:
        return False
    conn.execute(
        "INSERT INTO quota_usage (account, channel, period, member, used) VALUES (?, ?, ?, ?, 1)"
        " ON CONFLICT (account, channel, period, member) DO UPDATE SET used = used + 1",
        (*key, charge.member),
    )
    return True


def _owe_refund(conn: sqlite3.Connection, step_id: int) -> None:
    conn.execute("INSERT OR IGNORE INTO ding_refunds (step_id) VALUES (?)", (step_id,))


def _owe_refund_if_due(conn: sqlite3.Connection, step: DingStep, now: int) -> None:
    """G2: an SMS or call step cancelled while still ``scheduled`` after it fell due may have
    been charged already (the charge commits before its hand-over): a refund is owed. One
    not yet due was never charged."""
    if step.channel != "in_app" and step.due_at <= now:
        _owe_refund(conn, step.step_id)


def _cancel_scheduled(
    conn: sqlite3.Connection, ding_id: int, user_id: int | None, now: int
) -> None:
    """Cancel the DING's ``scheduled`` steps (of ``user_id`` only, if given)."""
    where = "ding_id = ? AND state = 'scheduled'"
    args: tuple[int, ...] = (ding_id,)
    if user_id is not None:
        where += " AND user_id = ?"
        args += (user_id,)
    steps = [_step_of(r) for r in conn.execute(f"{_SELECT_STEP} WHERE {where}", args)]
    for step in steps:
        _move(conn, step, "cancelled", now)
        _owe_refund_if_due(conn, step, now)


def _refund(conn: sqlite3.Connection, account: str, channel: str, period: str, member: int) -> None:
    key = (account, channel, period)
    conn.execute(
        "UPDATE quota_balances SET used = used - 1"
        " WHERE account = ? AND channel = ? AND period = ?",
        key,
    )
    conn.execute(
        "UPDATE quota_usage SET used = used - 1"
        " WHERE account = ? AND channel = ? AND period = ? AND member = ?",
        (*key, member),
    )


def _recorded_outcome(state: str) -> ChargeOutcome:
    """A recorded charge as ``charge_step`` answers it again: a refunded unit was paid."""
    if state in ("paid", "refunded"):
        return "paid"
    return "exhausted" if state == "exhausted" else "void"


def _payer_range(org_id: int) -> tuple[str, str]:
    """[low, high) of the payers ``org:<org>/...``: ``/`` sorts just below ``0``."""
    return f"org:{org_id}/", f"org:{org_id}0"


def _balance(
    conn: sqlite3.Connection, account: str, channel: ChannelName, period: str
) -> QuotaBalance | None:
    key = (account, channel, period)
    row = conn.execute(
        "SELECT granted, used FROM quota_balances WHERE account = ? AND channel = ? AND period = ?",
        key,
    ).fetchone()
    if row is None:
        return None
    members = conn.execute(
        "SELECT member, used FROM quota_usage"
        " WHERE account = ? AND channel = ? AND period = ? AND used > 0",
        key,
    )
    return QuotaBalance(
        account=account,
        channel=channel,
        period=period,
        granted=row[0],
        used=row[1],
        by_member={member: used for member, used in members},
    )


def _newest_first(
    conn: sqlite3.Connection,
    domain: DingDomain,
    sql: str,
    args: tuple[Any, ...],
    before: int | None,
    limit: int,
) -> list[Ding]:
    ids = [ding_id for (ding_id,) in conn.execute(sql, (*args, before, before, max(limit, 0)))]
    return _fetch_dings(conn, domain, ids)


class SqliteDingStore:
    def __init__(self, database: Database, *, domain: DingDomain = "cross") -> None:
        self._writer = database.writer
        self._readers = database.readers
        #: Which kind of DINGs this database keeps: labels its records and its keys.
        self._domain: DingDomain = domain

    # writes

    async def create(self, new: NewDing) -> DingCreated:
        def create_ding(conn: sqlite3.Connection) -> DingCreated:
            row = conn.execute(
                "SELECT ding_id, fingerprint FROM dings WHERE sender = ? AND cmid = ?",
                (new.sender, new.cmid),
            ).fetchone()
            if row is not None:
                if bytes(row[1]) != new.fingerprint:
                    raise IdempotencyConflict("idempotency key reused for a different DING")
                original = _fetch_ding(conn, self._domain, row[0])
                assert original is not None
                return DingCreated(ding=original, duplicate=True)
            ding_id = conn.execute(
                "INSERT INTO dings (sender, payer, text, cmid, fingerprint, state, created_at,"
                " send_at, sms_after_s, call_after_s, round, round_at, sealed)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING ding_id",
                (
                    new.sender,
                    new.payer,
                    new.text,
                    new.cmid,
                    new.fingerprint,
                    new.state,
                    new.created_at,
                    new.send_at,
                    new.sms_after_s,
                    new.call_after_s,
                    new.send_at,
                    new.sealed,
                ),
            ).fetchone()[0]
            conn.executemany(
                "INSERT INTO ding_recipients (ding_id, user_id) VALUES (?, ?)",
                [(ding_id, user) for user in new.recipients],
            )
            _insert_steps(conn, ding_id, new.steps, round_=1, now=new.created_at)
            conn.executemany(
                "INSERT INTO ding_effects (ding_id, kind) VALUES (?, ?)",
                [(ding_id, kind) for kind in new.effects],
            )
            created = _fetch_ding(conn, self._domain, ding_id)
            assert created is not None
            return DingCreated(ding=created)

        return await self._writer.run("create_ding", create_ding)

    async def hand_over(
        self,
        step_ids: Sequence[int],
        *,
        now: int,
        charged: Mapping[int, StepCharge],
    ) -> HandOver:
        def hand_over_steps(conn: sqlite3.Connection) -> HandOver:
            steps = _steps_in(conn, step_ids)
            due = sorted(
                (s for s in steps if s.state == "scheduled"),
                key=lambda s: (s.due_at, CHANNEL_ORDER[s.channel], s.step_id),
            )
            for step in due:
                if step.channel != "in_app" and step.step_id not in charged:
                    raise ValueError(f"no quota charge for step {step.step_id}")
            moved_steps: list[DingStep] = []
            released: list[int] = []
            headers: dict[int, Ding] = {}
            for step in due:
                ding = headers.get(step.ding_id)
                if ding is None:
                    row = conn.execute(
                        f"SELECT {_DING_COLUMNS} FROM dings WHERE ding_id = ?", (step.ding_id,)
                    ).fetchone()
                    ding = headers[step.ding_id] = _ding_header(row, self._domain)
                if step.channel == "in_app":
                    moved_steps.append(_move(conn, step, "sent", now))
                    if ding.state == "scheduled":
                        conn.execute(
                            "UPDATE dings SET state = 'sent' WHERE ding_id = ?", (ding.ding_id,)
                        )
                        headers[ding.ding_id] = replace(ding, state="sent")
                        released.append(ding.ding_id)
                    continue
                (confirmed,) = conn.execute(
                    "SELECT confirmed_at FROM ding_recipients WHERE ding_id = ? AND user_id = ?",
                    (step.ding_id, step.user_id),
                ).fetchone()
                paid = charged[step.step_id]
                if confirmed is not None or ding.state != "sent" or paid.outcome == "void":
                    moved_steps.append(_move(conn, step, "cancelled", now))
                    continue
                if paid.outcome == "exhausted":
                    moved_steps.append(_move(conn, step, "quota_exhausted", now))
                    continue
                moved_steps.append(_move(conn, step, "handed_over", now))
                key = step_idempotency_key(
                    ding_id=ding.ding_id,
                    step_id=step.step_id,
                    created_at=ding.created_at,
                    domain=self._domain,
                )
                charge = paid.charge
                conn.execute(
                    "INSERT INTO ding_outbox (step_id, idempotency_key, account, channel,"
                    " period, member, attempts, next_attempt_at, claimed)"
                    " VALUES (?, ?, ?, ?, ?, ?, 0, ?, 0)",
                    (
                        step.step_id,
                        key,
                        charge.account,
                        charge.channel,
                        charge.period,
                        charge.member,
                        now,
                    ),
                )
            # G2: a paid step that did not go to the provider is owed its unit back.
            after = {s.step_id: s.state for s in _steps_in(conn, list(charged))}
            owed = [
                (step_id,)
                for step_id, paid in charged.items()
                if paid.outcome == "paid" and after.get(step_id) == "cancelled"
            ]
            conn.executemany("INSERT OR IGNORE INTO ding_refunds (step_id) VALUES (?)", owed)
            changes = _changes(conn, self._domain, [(s.ding_id, s.user_id) for s in moved_steps])
            return HandOver(
                changed=tuple(zip(moved_steps, changes, strict=True)), released=tuple(released)
            )

        return await self._writer.run("hand_over_ding_steps", hand_over_steps)

    async def confirm(self, ding_id: int, user_id: int, *, now: int) -> StepChange | None:
        def confirm_ding(conn: sqlite3.Connection) -> StepChange | None:
            row = conn.execute(
                "SELECT confirmed_at FROM ding_recipients WHERE ding_id = ? AND user_id = ?",
                (ding_id, user_id),
            ).fetchone()
            if row is None:
                return None
            if row[0] is not None:
                return _change(conn, self._domain, ding_id, user_id)
            conn.execute(
                "UPDATE ding_recipients SET confirmed_at = ?, read_at = coalesce(read_at, ?),"
                " delivered_at = coalesce(delivered_at, ?) WHERE ding_id = ? AND user_id = ?",
                (now, now, now, ding_id, user_id),
            )
            steps = [
                _step_of(r)
                for r in conn.execute(
                    f"{_SELECT_STEP} WHERE ding_id = ? AND user_id = ?"
                    " AND state IN ('scheduled', 'handed_over')",
                    (ding_id, user_id),
                )
            ]
            for step in steps:
                if step.state == "scheduled":
                    _move(conn, step, "cancelled", now)
                    _owe_refund_if_due(conn, step, now)
                    continue
                if conn.execute(
                    "DELETE FROM ding_outbox WHERE step_id = ? AND claimed = 0", (step.step_id,)
                ).rowcount:
                    _move(conn, step, "cancelled", now)
                    _owe_refund(conn, step.step_id)
            return _change(conn, self._domain, ding_id, user_id)

        return await self._writer.run("confirm_ding", confirm_ding)

    async def mark_read(self, ding_id: int, user_id: int, *, now: int) -> StepChange | None:
        def mark_ding_read(conn: sqlite3.Connection) -> StepChange | None:
            found = conn.execute(
                "UPDATE ding_recipients SET read_at = coalesce(read_at, ?),"
                " delivered_at = coalesce(delivered_at, ?) WHERE ding_id = ? AND user_id = ?",
                (now, now, ding_id, user_id),
            ).rowcount
            return _change(conn, self._domain, ding_id, user_id) if found else None

        return await self._writer.run("mark_ding_read", mark_ding_read)

    async def mark_delivered(
        self, ding_id: int, user_ids: Sequence[int], *, now: int
    ) -> list[StepChange]:
        def mark_ding_delivered(conn: sqlite3.Connection) -> list[StepChange]:
            changed = []
            for user in dict.fromkeys(user_ids):
                if conn.execute(
                    "UPDATE ding_recipients SET delivered_at = ?"
                    " WHERE ding_id = ? AND user_id = ? AND delivered_at IS NULL",
                    (now, ding_id, user),
                ).rowcount:
                    changed.append((ding_id, user))
            return _changes(conn, self._domain, changed)

        return await self._writer.run("mark_ding_delivered", mark_ding_delivered)

    async def cancel(self, ding_id: int, *, now: int) -> Ding | None:
        def cancel_ding(conn: sqlite3.Connection) -> Ding | None:
            if not conn.execute(
                "UPDATE dings SET state = 'cancelled' WHERE ding_id = ? AND state = 'scheduled'",
                (ding_id,),
            ).rowcount:
                return None
            _cancel_scheduled(conn, ding_id, None, now)
            return _fetch_ding(conn, self._domain, ding_id)

        return await self._writer.run("cancel_ding", cancel_ding)

    async def redding(
        self, ding_id: int, *, expect_round: int, now: int, steps: Sequence[NewStep]
    ) -> Ding | None:
        def redding(conn: sqlite3.Connection) -> Ding | None:
            if not conn.execute(
                "UPDATE dings SET round = round + 1, round_at = ?"
                " WHERE ding_id = ? AND state = 'sent' AND round = ?",
                (now, ding_id, expect_round),
            ).rowcount:
                return None
            users = sorted({s.user_id for s in steps})
            for user in users:
                if (
                    conn.execute(
                        "SELECT 1 FROM ding_recipients WHERE ding_id = ? AND user_id = ?",
                        (ding_id, user),
                    ).fetchone()
                    is None
                ):
                    raise ValueError("a re-DING step names no recipient of the DING")
                _cancel_scheduled(conn, ding_id, user, now)
            _insert_steps(conn, ding_id, steps, round_=expect_round + 1, now=now)
            return _fetch_ding(conn, self._domain, ding_id)

        return await self._writer.run("redding", redding)

    # the outbox

    async def claim_outbox(self, *, now: int, limit: int) -> list[OutboxItem]:
        def claim_outbox(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "UPDATE ding_outbox SET claimed = 1 WHERE step_id IN ("
                "  SELECT step_id FROM ding_outbox WHERE claimed = 0 AND next_attempt_at <= ?"
                "  ORDER BY next_attempt_at, step_id LIMIT ?)"
                " RETURNING step_id, idempotency_key, attempts, next_attempt_at",
                (now, max(limit, 0)),
            ).fetchall()
            items = []
            for step_id, key, attempts, next_attempt_at in rows:
                ding_id, user_id, channel, sender, text = conn.execute(
                    "SELECT s.ding_id, s.user_id, s.channel, d.sender, d.text"
                    " FROM ding_steps AS s JOIN dings AS d ON d.ding_id = s.ding_id"
                    " WHERE s.step_id = ?",
                    (step_id,),
                ).fetchone()
                items.append(
                    OutboxItem(
                        step_id=step_id,
                        ding_id=ding_id,
                        sender=sender,
                        user_id=user_id,
                        channel=channel,
                        text=text,
                        idempotency_key=key,
                        attempts=attempts,
                        next_attempt_at=next_attempt_at,
                    )
                )
            return sorted(items, key=lambda i: (i.next_attempt_at, i.step_id))

        return await self._writer.run("claim_ding_outbox", claim_outbox)

    async def next_outbox_attempt(self) -> int | None:
        def next_outbox_attempt(conn: sqlite3.Connection) -> int | None:
            (at,) = conn.execute(
                "SELECT min(next_attempt_at) FROM ding_outbox WHERE claimed = 0"
            ).fetchone()
            return None if at is None else int(at)

        return await self._readers.run("next_ding_outbox_attempt", next_outbox_attempt)

    async def outbox_sent(self, step_id: int, *, now: int) -> StepChange | None:
        return await self._finish(step_id, "sent", now)

    async def outbox_failed(
        self, step_id: int, *, now: int, refund: bool = False
    ) -> StepChange | None:
        return await self._finish(step_id, "failed", now, refund=refund)

    async def _finish(
        self, step_id: int, state: StepStateName, now: int, *, refund: bool = False
    ) -> StepChange | None:
        def finish_outbox(conn: sqlite3.Connection) -> StepChange | None:
            if not conn.execute("DELETE FROM ding_outbox WHERE step_id = ?", (step_id,)).rowcount:
                return None
            (step,) = _steps_in(conn, [step_id])
            _move(conn, step, state, now)
            if refund:
                _owe_refund(conn, step_id)
            return _change(conn, self._domain, step.ding_id, step.user_id)

        return await self._writer.run(f"ding_outbox_{state}", finish_outbox)

    async def outbox_retry(
        self, step_id: int, *, next_attempt_at: int, now: int
    ) -> StepChange | None:
        def retry_outbox(conn: sqlite3.Connection) -> StepChange | None:
            if (
                conn.execute("SELECT 1 FROM ding_outbox WHERE step_id = ?", (step_id,)).fetchone()
                is None
            ):
                return None
            (step,) = _steps_in(conn, [step_id])
            (confirmed_at,) = conn.execute(
                "SELECT confirmed_at FROM ding_recipients WHERE ding_id = ? AND user_id = ?",
                (step.ding_id, step.user_id),
            ).fetchone()
            if confirmed_at is not None:
                # G1: the recipient confirmed while this attempt was with the provider, which
                # did not take it: no further attempt. Withdrawn and refunded, as by confirm.
                conn.execute("DELETE FROM ding_outbox WHERE step_id = ?", (step_id,))
                _move(conn, step, "cancelled", now)
                _owe_refund(conn, step_id)
                return _change(conn, self._domain, step.ding_id, step.user_id)
            conn.execute(
                "UPDATE ding_outbox SET attempts = attempts + 1, next_attempt_at = ?, claimed = 0"
                " WHERE step_id = ?",
                (next_attempt_at, step_id),
            )
            return _change(conn, self._domain, step.ding_id, step.user_id)

        return await self._writer.run("ding_outbox_retry", retry_outbox)

    async def release_claims(self) -> int:
        def release_claims(conn: sqlite3.Connection) -> int:
            return conn.execute("UPDATE ding_outbox SET claimed = 0 WHERE claimed = 1").rowcount

        return await self._writer.run("release_ding_outbox_claims", release_claims)

    # G2 across databases: charges keyed by step, refunds owed

    async def charge_step(self, key: str, charge: QuotaCharge, *, now: int) -> ChargeOutcome:
        def charge_step(conn: sqlite3.Connection) -> ChargeOutcome:
            row = conn.execute(
                "SELECT state FROM quota_charges WHERE charge_key = ?", (key,)
            ).fetchone()
            if row is not None:
                return _recorded_outcome(row[0])
            outcome: ChargeOutcome = "paid" if _charge(conn, charge) else "exhausted"
            conn.execute(
                "INSERT INTO quota_charges (charge_key, account, channel, period, member,"
                " state, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    charge.account,
                    charge.channel,
                    charge.period,
                    charge.member,
                    outcome,
                    now,
                ),
            )
            return outcome

        return await self._writer.run("charge_ding_step", charge_step)

    async def refund_charge(self, key: str, *, now: int) -> bool:
        def refund_charge(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT state, account, channel, period, member FROM quota_charges"
                " WHERE charge_key = ?",
                (key,),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO quota_charges (charge_key, state, at) VALUES (?, 'void', ?)",
                    (key, now),
                )
                return False
            state, account, channel, period, member = row
            if state != "paid":
                return False
            _refund(conn, account, channel, period, member)
            conn.execute(
                "UPDATE quota_charges SET state = 'refunded', at = ? WHERE charge_key = ?",
                (now, key),
            )
            return True

        return await self._writer.run("refund_ding_charge", refund_charge)

    async def refunds_owed(self, *, limit: int) -> list[tuple[int, str]]:
        def refunds_owed(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            rows = conn.execute(
                "SELECT r.step_id, coalesce(d.payer, '') FROM ding_refunds AS r"
                " LEFT JOIN ding_steps AS s ON s.step_id = r.step_id"
                " LEFT JOIN dings AS d ON d.ding_id = s.ding_id"
                " ORDER BY r.step_id LIMIT ?",
                (max(limit, 0),),
            )
            return [(int(step), str(payer)) for step, payer in rows]

        return await self._readers.run("ding_refunds_owed", refunds_owed)

    async def refunds_settled(self, step_ids: Sequence[int]) -> None:
        def refunds_settled(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM ding_refunds WHERE step_id = ?", [(s,) for s in step_ids])

        await self._writer.run("ding_refunds_settled", refunds_settled)

    # effects on other stores (D4)

    async def pending_effects(self, *, after: int, limit: int) -> list[PendingDingEffect]:
        def pending_ding_effects(conn: sqlite3.Connection) -> list[PendingDingEffect]:
            rows = conn.execute(
                "SELECT effect_id, ding_id, kind FROM ding_effects WHERE effect_id > ?"
                " ORDER BY effect_id LIMIT ?",
                (after, max(limit, 0)),
            ).fetchall()
            headers: dict[int, Ding] = {}
            for chunk in _chunks(sorted({int(row[1]) for row in rows})):
                marks = ",".join("?" * len(chunk))
                for header in conn.execute(
                    f"SELECT {_DING_COLUMNS} FROM dings WHERE ding_id IN ({marks})", chunk
                ):
                    headers[header[0]] = _ding_header(header, self._domain)
            return [
                PendingDingEffect(
                    effect_id=int(effect_id),
                    kind=str(kind),
                    ding_id=int(ding_id),
                    ding=headers.get(ding_id),
                )
                for effect_id, ding_id, kind in rows
            ]

        return await self._readers.run("pending_ding_effects", pending_ding_effects)

    async def finish_effect(self, effect_id: int) -> None:
        def finish_ding_effect(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM ding_effects WHERE effect_id = ?", (effect_id,))

        await self._writer.run("finish_ding_effect", finish_ding_effect)

    async def delete_org_chunk(self, org_id: int, *, limit: int) -> int:
        low, high = _payer_range(org_id)
        account = f"org:{org_id}"

        def delete_org_chunk(conn: sqlite3.Connection) -> int:
            ids = [
                int(d)
                for (d,) in conn.execute(
                    "SELECT ding_id FROM dings WHERE payer >= ? AND payer < ?"
                    " ORDER BY ding_id LIMIT ?",
                    (low, high, max(limit, 1)),
                )
            ]
            deleted = 0
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                steps = f"SELECT step_id FROM ding_steps WHERE ding_id IN ({marks})"
                for table in ("ding_outbox", "ding_refunds"):
                    conn.execute(f"DELETE FROM {table} WHERE step_id IN ({steps})", chunk)
                conn.execute(f"DELETE FROM ding_effects WHERE ding_id IN ({marks})", chunk)
                for table in ("ding_steps", "ding_recipients", "dings"):
                    deleted += conn.execute(
                        f"DELETE FROM {table} WHERE ding_id IN ({marks})", chunk
                    ).rowcount
            if ids:
                return deleted
            # Then its package (G2), a chunk at a time: charges first (one per step ever).
            for table, key in _QUOTA_KEYS:
                deleted += conn.execute(
                    f"DELETE FROM {table} WHERE ({key}) IN"
                    f" (SELECT {key} FROM {table} WHERE account = ? LIMIT ?)",
                    (account, max(limit, 1)),
                ).rowcount
                if deleted:
                    return deleted
            return 0

        return await self._writer.run("delete_org_dings", delete_org_chunk)

    async def top_up(
        self,
        account: str,
        channel: ChannelName,
        period: str,
        *,
        units: int,
        idempotency: IdempotencyKey | None = None,
    ) -> TopUp:
        if units < 0:
            raise ValueError("units must not be negative")

        def top_up(conn: sqlite3.Connection) -> TopUp:
            if idempotency is not None:
                row = conn.execute(
                    "SELECT fingerprint, account, channel, period FROM quota_topups"
                    " WHERE sender = ? AND client_id = ?",
                    (idempotency.sender, idempotency.client_id),
                ).fetchone()
                if row is not None:
                    if bytes(row[0]) != idempotency.fingerprint:
                        raise IdempotencyConflict("idempotency key reused for a different top-up")
                    current = _balance(conn, row[1], row[2], row[3])
                    assert current is not None
                    return TopUp(balance=current, duplicate=True)
                conn.execute(
                    "INSERT INTO quota_topups (sender, client_id, fingerprint, account, channel,"
                    " period, units) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        idempotency.sender,
                        idempotency.client_id,
                        idempotency.fingerprint,
                        account,
                        channel,
                        period,
                        units,
                    ),
                )
            conn.execute(
                "INSERT INTO quota_balances (account, channel, period, granted, used)"
                " VALUES (?, ?, ?, ?, 0) ON CONFLICT (account, channel, period)"
                " DO UPDATE SET granted = granted + excluded.granted",
                (account, channel, period, units),
            )
            balance = _balance(conn, account, channel, period)
            assert balance is not None
            return TopUp(balance=balance)

        return await self._writer.run("top_up_quota", top_up)

    # reads

    async def get(self, ding_id: int) -> Ding | None:
        return await self._readers.run(
            "get_ding", lambda conn: _fetch_ding(conn, self._domain, ding_id)
        )

    async def list_sent(self, sender: int, *, before: int | None, limit: int) -> list[Ding]:
        return await self._readers.run(
            "list_sent_dings",
            lambda conn: _newest_first(
                conn,
                self._domain,
                "SELECT ding_id FROM dings WHERE sender = ? AND (? IS NULL OR ding_id < ?)"
                " ORDER BY ding_id DESC LIMIT ?",
                (sender,),
                before,
                limit,
            ),
        )

    async def list_received(self, user_id: int, *, before: int | None, limit: int) -> list[Ding]:
        return await self._readers.run(
            "list_received_dings",
            lambda conn: _newest_first(
                conn,
                self._domain,
                "SELECT r.ding_id FROM ding_recipients AS r JOIN dings AS d"
                " ON d.ding_id = r.ding_id WHERE r.user_id = ? AND d.state = 'sent'"
                " AND (? IS NULL OR r.ding_id < ?) ORDER BY r.ding_id DESC LIMIT ?",
                (user_id,),
                before,
                limit,
            ),
        )

    async def pending_steps(
        self, *, after: tuple[int, int] | None, limit: int
    ) -> list[tuple[int, int]]:
        due, step = after if after is not None else (-1, -1)

        def pending_steps(conn: sqlite3.Connection) -> list[tuple[int, int]]:
            rows = conn.execute(
                "SELECT due_at, step_id FROM ding_steps WHERE state = 'scheduled'"
                " AND (due_at, step_id) > (?, ?) ORDER BY due_at, step_id LIMIT ?",
                (due, step, max(limit, 0)),
            )
            return [(int(d), int(s)) for d, s in rows]

        return await self._readers.run("pending_ding_steps", pending_steps)

    async def steps(self, step_ids: Sequence[int]) -> list[DingStep]:
        return await self._readers.run("ding_steps", lambda conn: _steps_in(conn, step_ids))

    async def payers(self, ding_ids: Sequence[int]) -> dict[int, str]:
        def payers(conn: sqlite3.Connection) -> dict[int, str]:
            found: dict[int, str] = {}
            for chunk in _chunks(sorted(set(ding_ids))):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT ding_id, payer FROM dings WHERE ding_id IN ({marks})", chunk
                )
                found.update((int(d), str(p)) for d, p in rows)
            return found

        return await self._readers.run("ding_payers", payers)

    async def quota_balance(
        self, account: str, channel: ChannelName, period: str
    ) -> QuotaBalance | None:
        return await self._readers.run(
            "quota_balance", lambda conn: _balance(conn, account, channel, period)
        )
