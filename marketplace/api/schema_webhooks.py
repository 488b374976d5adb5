"""The OpenAPI description of webhooks and quotes (see `schema` for the conventions).

Its own module so that `schema` stays within the project's module size.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter

from marketplace.api.schema import SLUG_PARAMETER, WRITES, errors, paginated
from marketplace.api.serializers.quotes import QuoteQuerySerializer, QuoteSerializer
from marketplace.api.serializers.webhooks import (
    PageQuerySerializer,
    WebhookAttemptSerializer,
    WebhookCreatedSerializer,
    WebhookCreateSerializer,
    WebhookPingSerializer,
    WebhookSerializer,
)

WEBHOOK_ID_PARAMETER = OpenApiParameter(
    "webhook_id", str, OpenApiParameter.PATH, description="The endpoint's `id` (a UUID)."
)
DELIVERY = (
    " Each event is a POST of `{id, type, created, data}` (for tasks, `data.task` is the "
    "body of `GET /tasks/{id}/`, and `data.links.task` its path; past 16 KiB its `input` and "
    "`result.output` are replaced by `{omitted: true, bytes, sha256}`) with "
    "`X-Exchange-Event: <type>` and `X-Exchange-Signature: "
    't=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with the secret>`. Any 2xx '
    "within 5 s is delivered; anything else is retried with backoff for about a day, with "
    "the same event id and body. An endpoint failing for days is disabled "
    "(`disabled_at`, `disabled_reason`). API keys cannot manage webhooks."
)

WEBHOOKS_LIST: dict[str, Any] = {
    "methods": ["GET"],
    "operation_id": "webhooks_list",
    "tags": ["webhooks"],
    "parameters": [PageQuerySerializer],
    "responses": {
        200: paginated("PaginatedWebhookList", WebhookSerializer),
        **errors(400, 401, 403, 404),
    },
}
WEBHOOK_CREATE: dict[str, Any] = {
    "methods": ["POST"],
    "tags": ["webhooks"],
    "request": WebhookCreateSerializer,
    "examples": [
        OpenApiExample(
            "Finished tasks",
            value={
                "url": "https://hooks.example.com/exchange",
                "events": ["task.succeeded", "task.failed"],
            },
            request_only=True,
        )
    ],
    "responses": {201: WebhookCreatedSerializer, **errors(*WRITES, 409)},
    "description": "Add an endpoint; the response carries its signing `secret`, shown only "
    "this once. The URL is stored in ASCII (IDNA host, percent-encoded path and query). "
    "Private, loopback and other non-public targets are refused (400 "
    "`webhook_url_refused`)." + DELIVERY,
}
WEBHOOK: dict[str, Any] = {
    "methods": ["GET"],
    "tags": ["webhooks"],
    "parameters": [WEBHOOK_ID_PARAMETER],
    "responses": {200: WebhookSerializer, **errors(401, 403, 404)},
}
WEBHOOK_DELETE: dict[str, Any] = {
    "methods": ["DELETE"],
    "tags": ["webhooks"],
    "parameters": [WEBHOOK_ID_PARAMETER],
    "responses": {204: None, **errors(401, 403, 404)},
    "description": "Remove the endpoint, its pending events and its delivery log.",
}
WEBHOOK_DELIVERIES: dict[str, Any] = {
    "operation_id": "webhooks_deliveries_list",
    "tags": ["webhooks"],
    "parameters": [WEBHOOK_ID_PARAMETER, PageQuerySerializer],
    "responses": {
        200: paginated("PaginatedWebhookAttemptList", WebhookAttemptSerializer),
        **errors(400, 401, 403, 404),
    },
    "description": "Every attempt to deliver to this endpoint, newest first.",
}
WEBHOOK_PING: dict[str, Any] = {
    "tags": ["webhooks"],
    "parameters": [WEBHOOK_ID_PARAMETER],
    "request": None,
    "responses": {202: WebhookPingSerializer, **errors(401, 403, 404, 409, 429)},
    "description": "Send a `ping` event to this endpoint, delivered (and logged) like any "
    "other. 409 `webhook_disabled` for a disabled endpoint; 429 `throttled` (with "
    "Retry-After) past 10 pings a minute to one endpoint.",
}
WEBHOOK_ENABLE: dict[str, Any] = {
    "tags": ["webhooks"],
    "parameters": [WEBHOOK_ID_PARAMETER],
    "request": None,
    "responses": {200: WebhookSerializer, **errors(401, 403, 404)},
    "description": "Enable a disabled endpoint again: it receives new events from now on.",
}

AGENT_QUOTE: dict[str, Any] = {
    "tags": ["agents"],
    "parameters": [SLUG_PARAMETER, QuoteQuerySerializer],
    "responses": {200: QuoteSerializer, **errors(400, 401, 404)},
    "description": "What a task on this agent is likely to cost, in µCR: `max_cost` is what "
    "the fuel limit could cost at most; `estimate` comes from the fuel the agent's current "
    "binary used on its recent successful runs, scaled to `input_bytes`.",
}
