"""JSON API v1 for execution receipts: fetch a task's receipt, the public key, verify one."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from execution.engine.receipts import public_key_info, receipt_verify
from execution.models import Receipt
from marketplace.api import errors, task_for
from marketplace.exceptions import ReceiptNotReady
from marketplace.serializers import PublicKeySerializer, ReceiptSerializer, VerificationSerializer


@extend_schema(
    tags=["receipts"],
    responses={200: ReceiptSerializer, **errors(401, 404)},
    description="The signed receipt of a settled task; 404 `receipt_not_ready` until it settles.",
)
@api_view(["GET"])
def task_receipt(request: Request, task_id: Any) -> Response:
    task = task_for(request.user, task_id)
    receipt = Receipt.objects.filter(task=task).first()
    if receipt is None:
        raise ReceiptNotReady()
    return Response(ReceiptSerializer(receipt.as_dict()).data)


@extend_schema(tags=["receipts"], responses={200: PublicKeySerializer}, auth=[])
@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
def public_key(request: Request) -> Response:
    return Response(PublicKeySerializer(public_key_info()).data)


@extend_schema(
    tags=["receipts"],
    request=ReceiptSerializer,
    responses={200: VerificationSerializer, **errors(400, 413, 415)},
    auth=[],
    description=(
        "Checks a receipt's signature against this platform's key. A well-formed receipt "
        "that does not verify (altered, another key, bad base64) is `valid: false`; a body "
        "that is not a receipt object (missing or non-string fields) is 400."
    ),
)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
def verify(request: Request) -> Response:
    serializer = ReceiptSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return Response(
        VerificationSerializer({"valid": receipt_verify(serializer.validated_data)}).data
    )
