"""Domain errors. Each carries a stable `code` and the HTTP status the API maps it to."""

from __future__ import annotations


class DomainError(Exception):
    code = "error"
    status = 400
    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None, *, fields: dict | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.fields = fields or {}


class InvalidAmount(DomainError):
    code = "invalid_amount"
    default_message = "Amounts are positive whole numbers of µCR."


class InsufficientFunds(DomainError):
    code = "insufficient_funds"
    status = 402
    default_message = "The wallet balance is too low for this operation."


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"
    status = 409
    default_message = "This Idempotency-Key was already used with a different request."


class EscrowStateError(DomainError):
    code = "escrow_state_conflict"
    status = 409
    default_message = "The escrow is not in a state that allows this operation."


class FundingUnavailable(DomainError):
    code = "funding_unavailable"
    status = 403
    default_message = "No funding provider is enabled for deposits."
