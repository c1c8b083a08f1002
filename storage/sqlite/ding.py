"""The SQLite ``DingStore`` (G1-G3), in ``cross.db`` next to the conversations it serves.

Schema: ``migrations/cross/0004_ding.sql``. Every write is one named transaction on the
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
    Ding,
    DingCreated,
    DingRecipient,
    DingStep,
    HandOver,
    NewDing,
    NewStep,
    OutboxItem,
    QuotaBalance,
    QuotaCharge,
    StepChange,
    StepStateName,
    step_idempotency_key,
)
from storage.errors import IdempotencyConflict
from storage.sqlite.database import Database

_DING_COLUMNS: Final = (
    "ding_id, sender, payer, text, cmid, state, created_at, send_at, sms_after_s, call_after_s,"
    " round, round_at"
)
_STEP_COLUMNS: Final = "step_id, ding_id, user_id, channel, round, due_at, state, changed_at"
_SELECT_STEP: Final = f"SELECT {_STEP_COLUMNS} FROM ding_steps"
#: SQLite's default limit on host parameters is 32766; stay well below it.
_CHUNK: Final = 500


def _ding_header(row: Any) -> Ding:
    (ding_id, sender, payer, text, cmid, state, created, send_at, sms, call, round_, at) = row
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


def _fetch_dings(conn: sqlite3.Connection, ding_ids: Sequence[int]) -> list[Ding]:
    """The DINGs among ``ding_ids`` with recipients and steps, in the order given."""
    found: dict[int, Ding] = {}
    recipients: dict[int, list[DingRecipient]] = {}
    steps: dict[tuple[int, int], list[DingStep]] = {}
    for chunk in _chunks(ding_ids):
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT {_DING_COLUMNS} FROM dings WHERE ding_id IN ({marks})", chunk
        ):
            found[row[0]] = _ding_header(row)
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


def _fetch_ding(conn: sqlite3.Connection, ding_id: int) -> Ding | None:
    found = _fetch_dings(conn, [ding_id])
    return found[0] if found else None


def _changes(conn: sqlite3.Connection, pairs: Iterable[tuple[int, int]]) -> list[StepChange]:
    pairs = list(pairs)
    dings = {d.ding_id: d for d in _fetch_dings(conn, list(dict.fromkeys(p[0] for p in pairs)))}
    return [StepChange(ding=dings[ding_id], user_id=user) for ding_id, user in pairs]


def _change(conn: sqlite3.Connection, ding_id: int, user_id: int) -> StepChange:
    return _changes(conn, [(ding_id, user_id)])[0]


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
    conn: sqlite3.Connection, sql: str, args: tuple[Any, ...], before: int | None, limit: int
) -> list[Ding]:
    ids = [ding_id for (ding_id,) in conn.execute(sql, (*args, before, before, max(limit, 0)))]
    return _fetch_dings(conn, ids)


class SqliteDingStore:
    def __init__(self, database: Database) -> None:
        self._writer = database.writer
        self._readers = database.readers

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
                original = _fetch_ding(conn, row[0])
                assert original is not None
                return DingCreated(ding=original, duplicate=True)
            ding_id = conn.execute(
                "INSERT INTO dings (sender, payer, text, cmid, fingerprint, state, created_at,"
                " send_at, sms_after_s, call_after_s, round, round_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) RETURNING ding_id",
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
                ),
            ).fetchone()[0]
            conn.executemany(
                "INSERT INTO ding_recipients (ding_id, user_id) VALUES (?, ?)",
                [(ding_id, user) for user in new.recipients],
            )
            _insert_steps(conn, ding_id, new.steps, round_=1, now=new.created_at)
            created = _fetch_ding(conn, ding_id)
            assert created is not None
            return DingCreated(ding=created)

        return await self._writer.run("create_ding", create_ding)

    async def hand_over(
        self,
        step_ids: Sequence[int],
        *,
        now: int,
        charges: Mapping[tuple[str, ChannelName], QuotaCharge],
    ) -> HandOver:
        def hand_over_steps(conn: sqlite3.Connection) -> HandOver:
            due = sorted(
                (s for s in _steps_in(conn, step_ids) if s.state == "scheduled"),
                key=lambda s: (s.due_at, CHANNEL_ORDER[s.channel], s.step_id),
            )
            moved_steps: list[DingStep] = []
            released: list[int] = []
            headers: dict[int, Ding] = {}
            for step in due:
                ding = headers.get(step.ding_id)
                if ding is None:
                    row = conn.execute(
                        f"SELECT {_DING_COLUMNS} FROM dings WHERE ding_id = ?", (step.ding_id,)
                    ).fetchone()
                    ding = headers[step.ding_id] = _ding_header(row)
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
                if confirmed is not None or ding.state != "sent":
                    moved_steps.append(_move(conn, step, "cancelled", now))
                    continue
                charge = charges.get((ding.payer, step.channel))
                if charge is None:
                    raise ValueError(f"no quota charge for {ding.payer} {step.channel}")
                if not _charge(conn, charge):
                    moved_steps.append(_move(conn, step, "quota_exhausted", now))
                    continue
                moved_steps.append(_move(conn, step, "handed_over", now))
                key = step_idempotency_key(
                    ding_id=ding.ding_id, step_id=step.step_id, created_at=ding.created_at
                )
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
            changes = _changes(conn, [(s.ding_id, s.user_id) for s in moved_steps])
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
                return _change(conn, ding_id, user_id)
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
                    continue
                outbox = conn.execute(
                    "DELETE FROM ding_outbox WHERE step_id = ? AND claimed = 0"
                    " RETURNING account, channel, period, member",
                    (step.step_id,),
                ).fetchone()
                if outbox is not None:
                    _refund(conn, *outbox)
                    _move(conn, step, "cancelled", now)
            return _change(conn, ding_id, user_id)

        return await self._writer.run("confirm_ding", confirm_ding)

    async def mark_read(self, ding_id: int, user_id: int, *, now: int) -> StepChange | None:
        def mark_ding_read(conn: sqlite3.Connection) -> StepChange | None:
            found = conn.execute(
                "UPDATE ding_recipients SET read_at = coalesce(read_at, ?),"
                " delivered_at = coalesce(delivered_at, ?) WHERE ding_id = ? AND user_id = ?",
                (now, now, ding_id, user_id),
            ).rowcount
            return _change(conn, ding_id, user_id) if found else None

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
            return _changes(conn, changed)

        return await self._writer.run("mark_ding_delivered", mark_ding_delivered)

    async def cancel(self, ding_id: int, *, now: int) -> Ding | None:
        def cancel_ding(conn: sqlite3.Connection) -> Ding | None:
            if not conn.execute(
                "UPDATE dings SET state = 'cancelled' WHERE ding_id = ? AND state = 'scheduled'",
                (ding_id,),
            ).rowcount:
                return None
            conn.execute(
                "UPDATE ding_steps SET state = 'cancelled', changed_at = ?"
                " WHERE ding_id = ? AND state = 'scheduled'",
                (now, ding_id),
            )
            return _fetch_ding(conn, ding_id)

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
                conn.execute(
                    "UPDATE ding_steps SET state = 'cancelled', changed_at = ?"
                    " WHERE ding_id = ? AND user_id = ? AND state = 'scheduled'",
                    (now, ding_id, user),
                )
            _insert_steps(conn, ding_id, steps, round_=expect_round + 1, now=now)
            return _fetch_ding(conn, ding_id)

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

    async def outbox_failed(self, step_id: int, *, now: int) -> StepChange | None:
        return await self._finish(step_id, "failed", now)

    async def _finish(self, step_id: int, state: StepStateName, now: int) -> StepChange | None:
        def finish_outbox(conn: sqlite3.Connection) -> StepChange | None:
            if not conn.execute("DELETE FROM ding_outbox WHERE step_id = ?", (step_id,)).rowcount:
                return None
            (step,) = _steps_in(conn, [step_id])
            _move(conn, step, state, now)
            return _change(conn, step.ding_id, step.user_id)

        return await self._writer.run(f"ding_outbox_{state}", finish_outbox)

    async def outbox_retry(
        self, step_id: int, *, next_attempt_at: int, now: int
    ) -> StepChange | None:
        def retry_outbox(conn: sqlite3.Connection) -> StepChange | None:
            if not conn.execute(
                "UPDATE ding_outbox SET attempts = attempts + 1, next_attempt_at = ?, claimed = 0"
                " WHERE step_id = ?",
                (next_attempt_at, step_id),
            ).rowcount:
                return None
            (step,) = _steps_in(conn, [step_id])
            return _change(conn, step.ding_id, step.user_id)

        return await self._writer.run("ding_outbox_retry", retry_outbox)

    async def release_claims(self) -> int:
        def release_claims(conn: sqlite3.Connection) -> int:
            return conn.execute("UPDATE ding_outbox SET claimed = 0 WHERE claimed = 1").rowcount

        return await self._writer.run("release_ding_outbox_claims", release_claims)

    async def top_up(
        self, account: str, channel: ChannelName, period: str, *, units: int
    ) -> QuotaBalance:
        if units < 0:
            raise ValueError("units must not be negative")

        def top_up(conn: sqlite3.Connection) -> QuotaBalance:
            conn.execute(
                "INSERT INTO quota_balances (account, channel, period, granted, used)"
                " VALUES (?, ?, ?, ?, 0) ON CONFLICT (account, channel, period)"
                " DO UPDATE SET granted = granted + excluded.granted",
                (account, channel, period, units),
            )
            balance = _balance(conn, account, channel, period)
            assert balance is not None
            return balance

        return await self._writer.run("top_up_quota", top_up)

    # reads

    async def get(self, ding_id: int) -> Ding | None:
        return await self._readers.run("get_ding", lambda conn: _fetch_ding(conn, ding_id))

    async def list_sent(self, sender: int, *, before: int | None, limit: int) -> list[Ding]:
        return await self._readers.run(
            "list_sent_dings",
            lambda conn: _newest_first(
                conn,
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
