"""The caller's wallet: its summary, deposits (idempotent) and ledger lines."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from escrow.services import deposit_create
from marketplace import selectors
from marketplace.api import schema
from marketplace.api.auth_keys import key_scope
from marketplace.api.common import current_user, page_response, valid
from marketplace.api.serializers.wallet import (
    DepositRequestSerializer,
    DepositSerializer,
    TransferQuerySerializer,
    TransferSerializer,
    WalletSerializer,
)
from marketplace.idempotency import idempotent


@extend_schema(**schema.WALLET)
@key_scope(GET="wallet:read")
@api_view(["GET"])
def wallet(request: Request) -> Response:
    return Response(WalletSerializer(selectors.wallet_summary(current_user(request))).data)


@extend_schema(**schema.DEPOSIT)
@api_view(["POST"])
def deposits(request: Request) -> Response:
    user = current_user(request)

    def run(key: str | None) -> Response:
        data = valid(DepositRequestSerializer, request.data)
        transfer = deposit_create(user_id=user.pk, amount=data["amount"], idempotency_key=key)
        balance = selectors.account_balance(transfer.credit_account_id)
        body = {"transfer_id": transfer.pk, "amount": transfer.amount, "balance": balance}
        return Response(DepositSerializer(body).data, status=201)

    return idempotent(request, user, run)


@extend_schema(**schema.TRANSFERS)
@key_scope(GET="wallet:read")
@api_view(["GET"])
def transfers(request: Request) -> Response:
    query = valid(TransferQuerySerializer, request.query_params)
    lines = selectors.ledger_of(current_user(request), kind=query.get("kind"))
    return page_response(request, lines, TransferSerializer)
