"""Webhooks: add, list, read and remove endpoints; their delivery log; a test ping.

An endpoint is its owner's alone (anybody else gets 404 `webhook_not_found`). These views
declare no API-key scope, so a request made with an API key is refused: only a session or
the account's token manages where the account's events go.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from escrow.errors import DomainError
from marketplace.api import schema_webhooks as schema
from marketplace.api.common import current_user, page_response, valid
from marketplace.api.serializers.webhooks import (
    PageQuerySerializer,
    WebhookAttemptSerializer,
    WebhookCreatedSerializer,
    WebhookCreateSerializer,
    WebhookSerializer,
)
from marketplace.webhooks import selectors
from marketplace.webhooks.outbox import webhook_create, webhook_delete, webhook_enable, webhook_ping


class WebhookNotFound(DomainError):
    code = "webhook_not_found"
    status = 404
    default_message = "No such webhook."


def _owned(request: Request, webhook_id: Any) -> Any:
    return selectors.webhook_of(current_user(request), webhook_id, missing=WebhookNotFound)


@extend_schema(**schema.WEBHOOKS_LIST)
@extend_schema(**schema.WEBHOOK_CREATE)
@api_view(["GET", "POST"])
def webhooks(request: Request) -> Response:
    user = current_user(request)
    if request.method == "POST":
        data = valid(WebhookCreateSerializer, request.data)
        created = webhook_create(owner=user, url=data["url"], events=data["events"])
        return Response(WebhookCreatedSerializer(created).data, status=201)
    valid(PageQuerySerializer, request.query_params)
    return page_response(request, selectors.webhooks_of(user), WebhookSerializer)


@extend_schema(**schema.WEBHOOK)
@extend_schema(**schema.WEBHOOK_DELETE)
@api_view(["GET", "DELETE"])
def webhook(request: Request, webhook_id: Any) -> Response:
    endpoint = _owned(request, webhook_id)
    if request.method == "DELETE":
        webhook_delete(endpoint=endpoint)
        return Response(status=204)
    return Response(WebhookSerializer(endpoint).data)


@extend_schema(**schema.WEBHOOK_DELIVERIES)
@api_view(["GET"])
def webhook_deliveries(request: Request, webhook_id: Any) -> Response:
    endpoint = _owned(request, webhook_id)
    valid(PageQuerySerializer, request.query_params)
    return page_response(request, selectors.webhook_attempts(endpoint), WebhookAttemptSerializer)


@extend_schema(**schema.WEBHOOK_PING)
@api_view(["POST"])
def webhook_ping_view(request: Request, webhook_id: Any) -> Response:
    event_id = webhook_ping(endpoint=_owned(request, webhook_id))
    return Response({"event": event_id}, status=202)


@extend_schema(**schema.WEBHOOK_ENABLE)
@api_view(["POST"])
def webhook_enable_view(request: Request, webhook_id: Any) -> Response:
    webhook_enable(endpoint=_owned(request, webhook_id))
    return Response(WebhookSerializer(_owned(request, webhook_id)).data)
