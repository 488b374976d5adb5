"""Withdrawals from the caller's wallet: ask (idempotent), list, read, cancel.

No API key scope is declared: withdrawals answer a key with 403 `scope_required`.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from marketplace.api import schema_withdrawals as schema
from marketplace.api.common import current_user, page_response, valid
from marketplace.api.serializers.withdrawals import (
    WithdrawalQuerySerializer,
    WithdrawalRequestSerializer,
    WithdrawalSerializer,
)
from marketplace.idempotency import idempotent
from marketplace.withdrawals import (
    withdrawal_cancel_request,
    withdrawal_of,
    withdrawal_request,
    withdrawals_of,
)


@extend_schema(**schema.WITHDRAWALS_LIST)
@extend_schema(**schema.WITHDRAWAL_CREATE)
@api_view(["GET", "POST"])
def withdrawals(request: Request) -> Response:
    user = current_user(request)
    if request.method == "GET":
        valid(WithdrawalQuerySerializer, request.query_params)
        return page_response(request, withdrawals_of(user), WithdrawalSerializer)

    def run(key: str | None) -> Response:
        data = valid(WithdrawalRequestSerializer, request.data)
        withdrawal, _ = withdrawal_request(user=user, amount=data["amount"], idempotency_key=key)
        return Response(WithdrawalSerializer(withdrawal).data, status=201)

    return idempotent(request, user, run)


@extend_schema(**schema.WITHDRAWAL)
@api_view(["GET"])
def withdrawal(request: Request, withdrawal_id: int) -> Response:
    return Response(WithdrawalSerializer(withdrawal_of(current_user(request), withdrawal_id)).data)


@extend_schema(**schema.WITHDRAWAL_CANCEL)
@api_view(["POST"])
def withdrawal_cancel_view(request: Request, withdrawal_id: int) -> Response:
    user = current_user(request)

    def run(key: str | None) -> Response:
        withdrawal = withdrawal_cancel_request(user=user, withdrawal_id=withdrawal_id)
        return Response(WithdrawalSerializer(withdrawal).data)

    return idempotent(request, user, run)
