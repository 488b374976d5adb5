"""Funding providers: how money enters the system from outside (external → wallet)."""

from __future__ import annotations

from typing import Protocol

from django.conf import settings

from escrow.errors import FundingUnavailable


class FundingProvider(Protocol):
    name: str

    def collect(self, *, user_id: int, amount: int, reference: str) -> str:
        """Take `amount` µCR from the outside world; return the provider's reference.

        Raise a `DomainError` if the money could not be collected. Called before the
        ledger transaction so that no network I/O happens while rows are locked.
        """
        ...


class DevFundingProvider:
    """Credits instantly. For development and demos; off in production by default."""

    name = "dev"

    def collect(self, *, user_id: int, amount: int, reference: str) -> str:
        if not settings.DEV_FUNDING_ENABLED:
            raise FundingUnavailable(
                "The dev funding provider is disabled (set DEV_FUNDING_ENABLED=true)."
            )
        return f"dev:{reference}"


PROVIDERS: dict[str, FundingProvider] = {"dev": DevFundingProvider()}


def funding_provider(name: str) -> FundingProvider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise FundingUnavailable(f"Unknown funding provider {name!r}.") from None
