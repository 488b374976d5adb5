"""The test funding provider: a payment service with its own store, and bad days.

Selected with FUNDING_PROVIDER=test (only under the test settings). Its store is a small
SQLite file (`TEST_FUNDING_STORE`, else in DATA_DIR) shared by the test process and the
worker processes it starts: every collection and payout is recorded under our key, so a
second call with the same key returns the first answer and never pays twice. `records`
lists the store for reconciliation, like a provider's statement.

The mode (`funding_mode_set`) says how the next calls behave:
- `ok`: pays (or collects) and answers;
- `fail`: refuses for good (PayoutFailed / FundingUnavailable), records nothing paid;
- `timeout`: pays, then raises ProviderTimeout as if the answer were lost;
- `crash`: pays, then SIGKILLs its own process before it answers;
- `pending`: accepts and answers nothing yet (status stays pending);
- `lost`: takes the request, answers nothing, and its status lookup doesn't see it yet
  (`unknown`) until `funding_land` makes it land: a collection or payout arriving late;
- `unavailable`: pays, then answers a DomainError that is not a refusal (a 503 from a
  gateway in front of it).
A repeated call for a key still pending or lost raises ProviderTimeout again: the provider
has no answer yet, and it never takes the money twice.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings

from escrow.errors import DomainError, FundingUnavailable
from escrow.funding import PROVIDER_CALL_TIMEOUT_SECONDS, PayoutFailed, ProviderRecord, Status

# What status() answers for each stored state: a lost request is not visible yet.
VISIBLE = {"paid": "paid", "failed": "failed", "pending": "pending", "lost": "unknown"}


class ProviderTimeout(Exception):
    pass


class ProviderUnavailable(DomainError):
    code = "provider_unavailable"
    status = 503
    default_message = "test provider: 503 from the gateway."


def store_path() -> Path:
    return Path(os.environ.get("TEST_FUNDING_STORE") or settings.DATA_DIR / "test-funding.sqlite3")


def _db() -> sqlite3.Connection:
    # The provider's calls are bounded like a real one's (escrow.funding): a locked store
    # gives up well within the bound.
    db = sqlite3.connect(
        store_path(), timeout=PROVIDER_CALL_TIMEOUT_SECONDS / 3, isolation_level=None
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS ops (key TEXT PRIMARY KEY, kind TEXT, amount INTEGER,"
        " status TEXT, calls INTEGER DEFAULT 1, at REAL)"
    )
    db.execute("CREATE TABLE IF NOT EXISTS config (name TEXT PRIMARY KEY, value TEXT)")
    if "at" not in {column[1] for column in db.execute("PRAGMA table_info(ops)")}:
        db.execute("ALTER TABLE ops ADD COLUMN at REAL")  # a store an older suite left
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


def funding_land(key: str, status: str = "paid") -> None:
    """A request the provider took earlier (pending or lost) finishes now, as `status`."""
    with _db() as db:
        changed = db.execute(
            "UPDATE ops SET status = ?, at = ? WHERE key = ? AND status IN ('pending', 'lost')",
            (status, time.time(), key),
        ).rowcount
    assert changed == 1, f"the test provider holds no unfinished request {key}"


def funding_record_set(
    key: str, *, kind: str, amount: int, status: str, at: float | None = None
) -> None:
    """Write the provider's record for `key` as it stands on its side, whatever ours says:
    drift for reconciliation to find."""
    with _db() as db:
        db.execute(
            "INSERT OR REPLACE INTO ops (key, kind, amount, status, calls, at)"
            " VALUES (?, ?, ?, ?, COALESCE((SELECT calls FROM ops WHERE key = ?), 0), ?)",
            (key, kind, amount, status, key, time.time() if at is None else at),
        )


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
                if row[0] in ("pending", "lost"):
                    raise ProviderTimeout(f"test provider: {key} has no answer yet")
                return f"test:{key}"
            if mode == "fail":
                db.execute(
                    "INSERT INTO ops VALUES (?, ?, ?, 'failed', 1, ?)",
                    (key, kind, amount, time.time()),
                )
                db.execute("COMMIT")
                raise refused(f"test provider: {key} refused")
            status = mode if mode in ("pending", "lost") else "paid"
            db.execute(
                "INSERT INTO ops VALUES (?, ?, ?, ?, 1, ?)",
                (key, kind, amount, status, time.time()),
            )
            db.execute("COMMIT")
        finally:
            db.close()
        if mode in ("timeout", "lost"):
            raise ProviderTimeout(f"test provider: no answer for {key}")
        if mode == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "pending":
            raise ProviderTimeout(f"test provider: {key} is still pending")
        if mode == "unavailable":
            raise ProviderUnavailable()
        return f"test:{key}"

    def collect(self, *, user_id: int, amount: int, reference: str) -> str:
        return self._op(reference, "collect", amount, FundingUnavailable)

    def payout(self, withdrawal: Any) -> str:
        return self._op(withdrawal.key, "payout", withdrawal.amount, PayoutFailed)

    def status(self, reference: str) -> Status:
        with _db() as db:
            row = db.execute("SELECT status FROM ops WHERE key = ?", (reference,)).fetchone()
        return VISIBLE[row[0]] if row else "unknown"  # type: ignore[return-value]

    def records(self, *, since: datetime, until: datetime) -> list[ProviderRecord]:
        with _db() as db:
            rows = list(
                db.execute(
                    # A lost request is not on the provider's statement until it lands.
                    "SELECT key, kind, amount, status FROM ops"
                    " WHERE at >= ? AND at < ? AND status != 'lost' ORDER BY key",
                    (since.timestamp(), until.timestamp()),
                )
            )
        return [
            ProviderRecord(key=key, kind=kind, amount=amount, status=VISIBLE[status])  # type: ignore[arg-type]
            for key, kind, amount, status in rows
        ]
