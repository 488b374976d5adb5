"""Execution receipts: a task's signed receipt, the platform's public keys, verification.

The receipt is reached through the task (`task.receipt`, the reverse one-to-one of the
executor's model), so this app never imports the executor app; only its engine, which
signs and verifies and imports nothing of the project.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from execution.engine.receipts import public_key_info, public_keys_info, receipt_verify
from marketplace import selectors
from marketplace.api import schema
from marketplace.api.auth_keys import agent_allowlist, key_scope
from marketplace.api.common import current_user, valid
from marketplace.api.serializers.receipts import (
    PublicKeySerializer,
    PublicKeysSerializer,
    ReceiptSerializer,
    VerificationSerializer,
)
from marketplace.exceptions import ReceiptNotReady, TaskNotFound


@extend_schema(**schema.TASK_RECEIPT)
@key_scope(GET="tasks:read")
@api_view(["GET"])
def task_receipt(request: Request, task_id: Any) -> Response:
    task = selectors.task_of(
        current_user(request), task_id, missing=TaskNotFound, allowlist=agent_allowlist(request)
    )
    # Receipts are issued when a task settles; until then the task has none.
    receipt = getattr(task, "receipt", None)
    if receipt is None:
        raise ReceiptNotReady()
    return Response(ReceiptSerializer(receipt).data)


@extend_schema(**schema.RECEIPT_PUBLIC_KEY)
@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
def public_key(request: Request) -> Response:
    return Response(PublicKeySerializer(public_key_info()).data)


@extend_schema(**schema.RECEIPT_PUBLIC_KEYS)
@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
def public_keys(request: Request) -> Response:
    return Response(PublicKeysSerializer({"keys": public_keys_info()}).data)


@extend_schema(**schema.RECEIPT_VERIFY)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
def verify(request: Request) -> Response:
    receipt = valid(ReceiptSerializer, request.data)
    return Response(VerificationSerializer({"valid": receipt_verify(receipt)}).data)
