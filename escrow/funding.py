"""Funding providers: how money enters the system from outside (external → wallet) and
leaves it (payouts → external).

Every call carries our own key for the operation (a deposit's reference `dep_<hex>`, a
withdrawal's `wd_<hex>`), which the provider treats as an idempotency key: asking twice
collects or pays once. Both keys are random, so they name one operation whatever database
(a restored backup, a staging copy) asks the same provider. `status(key)` says what became
of an operation whose answer was lost; `records(since, until)` lists what the provider did
in a window, for the daily reconciliation (`escrow.reconcile`).

What an answer means:
- an amount collected or paid, or status `paid`: done;
- a refusal (`PayoutFailed` from `payout`, `FundingUnavailable` from `collect`), or status
  `failed`: not done, and it never will be under that key;
- anything else (a timeout, a 503 after the money moved, status `pending` or `unknown`):
  nobody knows yet. Ask again later with the same key; never treat it as a refusal.

Every call returns or raises within PROVIDER_CALL_TIMEOUT_SECONDS (an HTTP client's
timeout, for a real one): a withdrawal's lease, during which no one else asks the provider
about it, is sized on that bound (`escrow.withdrawals.withdrawal_lease`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from escrow.errors import DomainError, FundingUnavailable

Status = Literal["paid", "failed", "pending", "unknown"]
STATUSES = ("paid", "failed", "pending", "unknown")
# Only the test suite may select the test provider (it lives with the tests).
TEST_PROVIDER = "tests.funding_provider.TestFundingProvider"
TEST_SETTINGS = "tests.settings"
# The longest a provider call may take before it gives up (and raises).
PROVIDER_CALL_TIMEOUT_SECONDS = 30


class PayoutFailed(DomainError):
    """The provider refused the payout for good: the money goes back to the wallet."""

    code = "payout_failed"
    status = 402
    default_message = "The payout provider refused the payout."


@dataclass(frozen=True)
class ProviderRecord:
    """One operation in the provider's own books, under our key."""

    key: str
    kind: Literal["collect", "payout"]
    amount: int
    status: Status


class FundingProvider(Protocol):
    name: str

    def collect(self, *, user_id: int, amount: int, reference: str) -> str:
        """Take `amount` µCR from the outside world; return the provider's reference.

        Raise `FundingUnavailable` only when the provider refused the collection (or is
        not enabled); any other exception, a `DomainError` among them, leaves it unknown.
        Called outside any transaction, after the pending deposit row is committed, so a
        crash while asking leaves a row that recovery finishes by asking again with the
        same reference.
        """
        ...

    def payout(self, withdrawal: Any) -> str:
        """Pay `withdrawal.amount` µCR out to its user, idempotently by `withdrawal.key`;
        return the provider's reference. Raise `PayoutFailed` when it is refused for good;
        any other exception (a timeout, a 503) leaves the outcome unknown."""
        ...

    def status(self, reference: str) -> Status:
        """What became of the operation with our key `reference`: paid (collected, for a
        deposit), failed, pending (still under way) or unknown (not known to it, yet)."""
        ...

    def records(self, *, since: datetime, until: datetime) -> list[ProviderRecord] | None:
        """The operations the provider recorded in [since, until); None if it keeps no
        records to reconcile against."""
        ...


class DevFundingProvider:
    """Credits and pays instantly. For development and demos; off in production by default."""

    name = "dev"

    def _enabled(self, refused: type[DomainError] = FundingUnavailable) -> None:
        if not settings.DEV_FUNDING_ENABLED:
            raise refused("The dev funding provider is disabled (set DEV_FUNDING_ENABLED=true).")

    def collect(self, *, user_id: int, amount: int, reference: str) -> str:
        self._enabled()
        return f"dev:{reference}"

    def payout(self, withdrawal: Any) -> str:
        # Disabled, it pays nothing, ever: a refusal, so the money goes back.
        self._enabled(PayoutFailed)
        return f"dev:{withdrawal.key}"

    def status(self, reference: str) -> Status:
        # Keeps no record: nothing it was asked is known; asking again is harmless.
        self._enabled()
        return "unknown"

    def records(self, *, since: datetime, until: datetime) -> list[ProviderRecord] | None:
        return None


PROVIDERS: dict[str, FundingProvider] = {"dev": DevFundingProvider()}


def funding_provider(name: str | None = None) -> FundingProvider:
    """The provider `name`, or the configured one (`FUNDING_PROVIDER`)."""
    name = name or settings.FUNDING_PROVIDER
    if name == "test":
        if "pytest" not in sys.modules and settings.SETTINGS_MODULE != TEST_SETTINGS:
            raise FundingUnavailable("The test funding provider only runs under the tests.")
        provider: FundingProvider = import_string(TEST_PROVIDER)()
        return provider
    try:
        return PROVIDERS[name]
    except KeyError:
        raise FundingUnavailable(f"Unknown funding provider {name!r}.") from None
