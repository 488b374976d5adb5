"""The OpenAPI description of the withdrawals endpoints (see `schema` for the conventions)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter

from marketplace.api.schema import IDEMPOTENCY_PARAMETER, WRITES, errors, paginated
from marketplace.api.serializers.withdrawals import (
    WithdrawalQuerySerializer,
    WithdrawalRequestSerializer,
    WithdrawalSerializer,
)

WITHDRAWAL_ID_PARAMETER = OpenApiParameter(
    "withdrawal_id", int, OpenApiParameter.PATH, description="The withdrawal's `id`."
)
WITHDRAWALS_LIST: dict[str, Any] = {
    "methods": ["GET"],
    "operation_id": "wallet_withdrawals_list",
    "tags": ["wallet"],
    "parameters": [WithdrawalQuerySerializer],
    "responses": {
        200: paginated("PaginatedWithdrawalList", WithdrawalSerializer),
        **errors(400, 401),
    },
}
WITHDRAWAL_CREATE: dict[str, Any] = {
    "methods": ["POST"],
    "operation_id": "wallet_withdrawals_create",
    "tags": ["wallet"],
    "description": "Pay money out of the wallet. The amount leaves the wallet at once (into "
    "the platform's payouts account) and a worker asks the payout provider; watch `status` "
    "turn `paid`, or `failed` with the money back in the wallet. 400 `withdrawal_too_small` "
    "below WITHDRAWAL_MIN; 402 `insufficient_funds` beyond the balance.",
    "request": WithdrawalRequestSerializer,
    "examples": [OpenApiExample("Withdraw 2 CR", value={"amount": 2_000_000}, request_only=True)],
    "parameters": [IDEMPOTENCY_PARAMETER],
    "responses": {201: WithdrawalSerializer, **errors(*WRITES, 402, 409)},
}
WITHDRAWAL: dict[str, Any] = {
    "tags": ["wallet"],
    "parameters": [WITHDRAWAL_ID_PARAMETER],
    "responses": {200: WithdrawalSerializer, **errors(401, 404)},
}
WITHDRAWAL_CANCEL: dict[str, Any] = {
    "tags": ["wallet"],
    "description": "Cancel a pending withdrawal: the money goes back to the wallet. 409 "
    "`withdrawal_state_conflict` once a worker has taken it.",
    "request": None,
    "parameters": [WITHDRAWAL_ID_PARAMETER, IDEMPOTENCY_PARAMETER],
    "responses": {200: WithdrawalSerializer, **errors(401, 403, 404, 409)},
}
