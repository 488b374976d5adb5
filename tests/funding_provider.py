"""The test funding provider: a payment service with its own store, and bad days.

Selected with FUNDING_PROVIDER=test (only under the test settings). Its store is a small
SQLite file (`TEST_FUNDING_STORE`, else in DATA_DIR) shared by the test process and the
worker processes it starts: every collection and payout is recorded under our key, so a
second call with the same key returns the first answer and never pays twice.

The mode (`funding_mode_set`) says how the next calls behave:
- `ok`: pays (or collects) and answers;
- `fail`: refuses for good (PayoutFailed / FundingUnavailable), records nothing paid;
- `timeout`: pays, then raises ProviderTimeout as if the answer were lost;
- `crash`: pays, then SIGKILLs its own process before it answers;
- `pending`: accepts and answers nothing yet (status stays pending).
"""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

from django.conf import settings

from escrow.errors import FundingUnavailable
from escrow.funding import PayoutFailed, Status


class ProviderTimeout(Exception):
    pass


def store_path() -> Path:
    return Path(os.environ.get("TEST_FUNDING_STORE") or settings.DATA_DIR / "test-funding.sqlite3")


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(store_path(), timeout=30, isolation_level=None)
    db.execute(
        "CREATE TABLE IF NOT EXISTS ops (key TEXT PRIMARY KEY, kind TEXT, amount INTEGER,"
        " status TEXT, calls INTEGER DEFAULT 1)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS config (name TEXT PRIMARY KEY, value TEXT)")
    return db


def funding_mode_set(mode: str) -> None:
    with _db() as db:
        db.execute("INSERT OR REPLACE INTO config VALUES ('mode', ?)", (mode,))


def funding_store_reset() -> None:
    with _db() as db:
        db.execute("DELETE FROM ops")
        db.execute("DELETE FROM config")


def funding_ops() -> list[tuple[str, str, int, str, int]]:
    with _db() as db:
        return list(db.execute("SELECT key, kind, amount, status, calls FROM ops ORDER BY key"))


def _mode(db: sqlite3.Connection) -> str:
    row = db.execute("SELECT value FROM config WHERE name = 'mode'").fetchone()
    return row[0] if row else "ok"


class TestFundingProvider:
    name = "test"

    def _op(self, key: str, kind: str, amount: int, refused: type[Exception]) -> str:
        db = _db()
        try:
            mode = _mode(db)
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT status FROM ops WHERE key = ?", (key,)).fetchone()
            if row is not None:
                db.execute("UPDATE ops SET calls = calls + 1 WHERE key = ?", (key,))
                db.execute("COMMIT")
                if row[0] == "failed":
                    raise refused(f"test provider: {key} was refused")
                return f"test:{key}"
            if mode == "fail":
                db.execute("INSERT INTO ops VALUES (?, ?, ?, 'failed', 1)", (key, kind, amount))
                db.execute("COMMIT")
                raise refused(f"test provider: {key} refused")
            status = "pending" if mode == "pending" else "paid"
            db.execute("INSERT INTO ops VALUES (?, ?, ?, ?, 1)", (key, kind, amount, status))
            db.execute("COMMIT")
        finally:
            db.close()
        if mode == "timeout":
            raise ProviderTimeout(f"test provider: no answer for {key}")
        if mode == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "pending":
            raise ProviderTimeout(f"test provider: {key} is still pending")
        return f"test:{key}"

    def collect(self, *, user_id: int, amount: int, reference: str) -> str:
        return self._op(reference, "collect", amount, FundingUnavailable)

    def payout(self, withdrawal: Any) -> str:
        return self._op(withdrawal.key, "payout", withdrawal.amount, PayoutFailed)

    def status(self, reference: str) -> Status:
        with _db() as db:
            row = db.execute("SELECT status FROM ops WHERE key = ?", (reference,)).fetchone()
        return row[0] if row else "unknown"
