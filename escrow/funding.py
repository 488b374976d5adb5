"""Funding providers: how money enters the system from outside (external → wallet) and
leaves it (payouts → external).

Every call carries our own key for the operation (a deposit's reference, a withdrawal's
`withdrawal:<id>`), which the provider treats as an idempotency key: asking twice collects
or pays once. `status(key)` says what became of an operation whose answer was lost.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from escrow.errors import DomainError, FundingUnavailable

Status = Literal["paid", "failed", "pending", "unknown"]
STATUSES = ("paid", "failed", "pending", "unknown")
# Only the test suite may select the test provider (it lives with the tests).
TEST_PROVIDER = "tests.funding_provider.TestFundingProvider"
TEST_SETTINGS = "tests.settings"


class PayoutFailed(DomainError):
    """The provider refused the payout for good: the money goes back to the wallet."""

    code = "payout_failed"
    status = 402
    default_message = "The payout provider refused the payout."


class FundingProvider(Protocol):
    name: str

    def collect(self, *, user_id: int, amount: int, reference: str) -> str:
        """Take `amount` µCR from the outside world; return the provider's reference.

        Raise a `DomainError` if the money could not be collected. Called outside any
        transaction, after the pending deposit row is committed, so a crash while asking
        leaves a row that recovery finishes with `status(reference)`.
        """
        ...

    def payout(self, withdrawal: Any) -> str:
        """Pay `withdrawal.amount` µCR out to its user, idempotently by `withdrawal.key`;
        return the provider's reference. Raise `PayoutFailed` when it is refused for good;
        any other exception (a timeout) leaves the outcome unknown."""
        ...

    def status(self, reference: str) -> Status:
        """What became of the operation with our key `reference`: paid (collected, for a
        deposit), failed, pending (still under way) or unknown (never received)."""
        ...


class DevFundingProvider:
    """Credits and pays instantly. For development and demos; off in production by default."""

    name = "dev"

    def _enabled(self) -> None:
        if not settings.DEV_FUNDING_ENABLED:
            raise FundingUnavailable(
                "The dev funding provider is disabled (set DEV_FUNDING_ENABLED=true)."
            )

    def collect(self, *, user_id: int, amount: int, reference: str) -> str:
        self._enabled()
        return f"dev:{reference}"

    def payout(self, withdrawal: Any) -> str:
        self._enabled()
        return f"dev:{withdrawal.key}"

    def status(self, reference: str) -> Status:
        # Keeps no record: nothing it was asked is known; asking again is harmless.
        self._enabled()
        return "unknown"


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
