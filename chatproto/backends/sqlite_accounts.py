"""Accounts, remembered rooms, room rules and server bans in the event log's
SQLite file (its schema 3). Same connection, same thread, same rule: a
write is a few microseconds in WAL mode, so it runs on the reactor thread
and the Deferred fires at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred

from chatproto.backends.accounts import AccountRecord, Ban, Membership
from chatproto.backends.eventlog import StoreError
from chatproto.backends.sqlite import SQLiteLog, on_history_file
from chatproto.codec import dumps

T = TypeVar("T")


class SQLiteAccounts:
    """The :class:`~chatproto.backends.accounts.AccountStore` of an SQLiteLog's file."""

    def __init__(self, log: SQLiteLog) -> None:
        self._log = log

    def _do(self, work: Callable[[sqlite3.Connection], T]) -> Deferred[T]:
        return on_history_file(self._log, work, lambda why: StoreError(f"can't use accounts in {why}"))

    def account(self, key: str) -> Deferred[AccountRecord | None]:
        def read(db: sqlite3.Connection) -> AccountRecord | None:
            row = db.execute(
                "SELECT key, nick, secret, created, admin FROM accounts WHERE key = ?", (key,)
            ).fetchone()
            return AccountRecord(row[0], row[1], row[2], row[3], bool(row[4])) if row else None

        return self._do(read)

    def save_account(self, record: AccountRecord) -> Deferred[None]:
        def save(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO accounts VALUES (?, ?, ?, ?, ?)",
                (record.key, record.nick, record.secret, record.created, int(record.admin)),
            )

        return self._do(save)

    def create_account(self, record: AccountRecord) -> Deferred[bool]:
        def create(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO accounts VALUES (?, ?, ?, ?, ?)",
                (record.key, record.nick, record.secret, record.created, int(record.admin)),
            )
            return cursor.rowcount == 1

        return self._do(create)

    def delete_account(self, key: str) -> Deferred[None]:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            db.execute("DELETE FROM accounts WHERE key = ?", (key,))
            db.execute("DELETE FROM memberships WHERE account = ?", (key,))
            db.execute("COMMIT")

        return self._do(delete)

    def count_accounts(self) -> Deferred[int]:
        return self._do(lambda db: db.execute("SELECT COUNT(*) FROM accounts").fetchone()[0])

    def memberships(self, key: str) -> Deferred[list[Membership]]:
        return self._do(
            lambda db: [
                Membership(name, read)
                for name, read in db.execute(
                    "SELECT name, read FROM memberships WHERE account = ? ORDER BY joined", (key,)
                )
            ]
        )

    def remember(self, key: str, room: str, membership: Membership) -> Deferred[None]:
        def write(db: sqlite3.Connection) -> None:
            updated = db.execute(
                "UPDATE memberships SET name = ?, read = ? WHERE account = ? AND room = ?",
                (membership.room, membership.read, key, room),
            ).rowcount
            if not updated:
                (joined,) = db.execute("SELECT coalesce(max(joined), 0) + 1 FROM memberships").fetchone()
                db.execute(
                    "INSERT INTO memberships VALUES (?, ?, ?, ?, ?)",
                    (key, room, membership.room, membership.read, joined),
                )

        return self._do(write)

    def invite(self, key: str, room: str, membership: Membership) -> Deferred[None]:
        def write(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM memberships WHERE account = ? AND room = ?", (key, room)).fetchone():
                return
            (joined,) = db.execute("SELECT coalesce(max(joined), 0) + 1 FROM memberships").fetchone()
            db.execute(
                "INSERT INTO memberships VALUES (?, ?, ?, ?, ?)",
                (key, room, membership.room, membership.read, joined),
            )

        return self._do(write)

    def forget(self, key: str, room: str) -> Deferred[None]:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM memberships WHERE account = ? AND room = ?", (key, room))

        return self._do(delete)

    def forget_room(self, room: str) -> Deferred[None]:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            db.execute("DELETE FROM memberships WHERE room = ?", (room,))
            db.execute("DELETE FROM room_rules WHERE room = ?", (room,))
            db.execute("COMMIT")

        return self._do(delete)

    def forget_operator(self, key: str) -> Deferred[None]:
        def forget(db: sqlite3.Connection) -> None:
            changed = []
            for room, text in db.execute("SELECT room, rules FROM room_rules").fetchall():
                rules = json.loads(text)
                if key in rules.get("ops", ()):
                    rules["ops"] = [op for op in rules["ops"] if op != key]
                    changed.append((dumps(rules), room))
            db.executemany("UPDATE room_rules SET rules = ? WHERE room = ?", changed)

        return self._do(forget)

    def rules(self, room: str) -> Deferred[dict | None]:
        def read(db: sqlite3.Connection) -> dict | None:
            row = db.execute("SELECT rules FROM room_rules WHERE room = ?", (room,)).fetchone()
            return json.loads(row[0]) if row else None

        return self._do(read)

    def set_rules(self, room: str, rules: dict) -> Deferred[None]:
        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO room_rules VALUES (?, ?)", (room, dumps(rules)))

        return self._do(write)

    def server_bans(self) -> Deferred[list[tuple[str, Ban]]]:
        return self._do(
            lambda db: [
                (kind, Ban(target, by, ts, reason, until))
                for kind, target, by, ts, reason, until in db.execute(
                    "SELECT kind, target, by, ts, reason, until FROM server_bans ORDER BY ts"
                )
            ]
        )

    def set_server_ban(self, kind: str, ban: Ban) -> Deferred[None]:
        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO server_bans VALUES (?, ?, ?, ?, ?, ?)",
                (kind, ban.target, ban.by, ban.ts, ban.reason, ban.until),
            )

        return self._do(write)

    def lift_server_ban(self, kind: str, target: str) -> Deferred[None]:
        def delete(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM server_bans WHERE kind = ? AND target = ?", (kind, target))

        return self._do(delete)
