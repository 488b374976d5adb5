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


class IdempotencyInProgress(DomainError):
    code = "idempotency_in_progress"
    status = 409
    default_message = (
        "A request with this Idempotency-Key is still being answered; retry in a moment."
    )


class EscrowStateError(DomainError):
    code = "escrow_state_conflict"
    status = 409
    default_message = "The escrow is not in a state that allows this operation."


class FundingUnavailable(DomainError):
    code = "funding_unavailable"
    status = 403
    default_message = "No funding provider is enabled for deposits."


class ChannelNotFound(DomainError):
    code = "not_found"
    status = 404
    default_message = "No such channel."


class ChannelNotOpen(DomainError):
    code = "channel_not_open"
    status = 409
    default_message = "The channel is closing or settled and takes no new tasks."


class ChannelExpired(DomainError):
    code = "channel_expired"
    status = 409
    default_message = "The channel has expired."


class ChannelAgentMismatch(DomainError):
    code = "channel_agent_mismatch"
    default_message = "The channel pays a different agent."


class InvalidPublicKey(DomainError):
    code = "invalid_public_key"
    default_message = "public_key must be a base64 raw 32-byte Ed25519 public key."


class KeyNotFound(DomainError):
    code = "not_found"
    status = 404
    default_message = "No such key."


class KeyRevoked(DomainError):
    code = "key_revoked"
    status = 409
    default_message = "This public key was revoked; a revoked key cannot be registered again."


class TooManyKeys(DomainError):
    code = "too_many_keys"
    status = 409
    default_message = "You have as many voucher keys as allowed; revoke one first."


class VoucherError(DomainError):
    default_message = "The voucher was refused."


class VoucherMalformed(VoucherError):
    code = "voucher_malformed"
    default_message = "A voucher is {nonce: int, cumulative_amount: int, signature: base64}."


class VoucherBadSignature(VoucherError):
    code = "voucher_bad_signature"
    status = 403
    default_message = "The voucher's signature does not verify for this channel."


class VoucherReplayed(VoucherError):
    code = "voucher_replayed"
    status = 409
    default_message = "This voucher was already used."


class VoucherStale(VoucherError):
    code = "voucher_nonce_stale"
    status = 409
    default_message = "The voucher's nonce is older than the channel's latest."


class VoucherExceedsDeposit(VoucherError):
    code = "voucher_exceeds_deposit"
    status = 402
    default_message = "The voucher authorizes more than the channel's deposit."


class VoucherInsufficient(VoucherError):
    code = "voucher_insufficient"
    status = 402
    default_message = "The voucher does not cover what is redeemed, in flight and this budget."
