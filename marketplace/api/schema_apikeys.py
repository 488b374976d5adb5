"""The OpenAPI description of the API keys endpoints (see `schema` for the conventions).

Its own module so that `schema` stays within the project's module size.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, OpenApiParameter

from marketplace.api.schema import WRITES, errors, paginated
from marketplace.api.serializers.apikeys import (
    ApiKeyCreatedSerializer,
    ApiKeySerializer,
    ApiKeyWriteSerializer,
)

API_KEY_ID_PARAMETER = OpenApiParameter(
    "key_id", int, OpenApiParameter.PATH, description="The API key's `id`."
)
API_KEY_MANAGEMENT = (
    " Only a session or the account's token manages keys; a request made with an API key "
    "gets 403 `scope_required`."
)
API_KEYS_LIST: dict[str, Any] = {
    "methods": ["GET"],
    "operation_id": "api_keys_list",
    "tags": ["api keys"],
    "responses": {
        200: paginated("PaginatedApiKeyList", ApiKeySerializer),
        **errors(401, 403, 404),
    },
    "description": "Your API keys, revoked ones included, newest first." + API_KEY_MANAGEMENT,
}
API_KEY_CREATE: dict[str, Any] = {
    "methods": ["POST"],
    "tags": ["api keys"],
    "request": ApiKeyWriteSerializer,
    "examples": [
        OpenApiExample(
            "A capped key for a program",
            value={
                "name": "nightly summarizer",
                "scopes": ["tasks:read", "tasks:write"],
                "limits": {"per_task": 200_000, "daily": 2_000_000, "total": 50_000_000},
                "agents": ["wordcount"],
            },
            request_only=True,
        )
    ],
    "responses": {201: ApiKeyCreatedSerializer, **errors(*WRITES, 409)},
    "description": (
        "A new key, sent as `Authorization: Bearer <key>`. `key` is in this response only: "
        "the platform keeps just its hash. Every submission made with the key counts its "
        "budget against each limit (UTC day, UTC month, lifetime; `per_task` caps one "
        "budget), and settlement gives back what was not spent; over a limit the request "
        "is 402 `spend_limit_exceeded`. 409 `too_many_api_keys` beyond "
        "`API_KEYS_MAX_PER_USER` live keys." + API_KEY_MANAGEMENT
    ),
}
API_KEY_GET: dict[str, Any] = {
    "methods": ["GET"],
    "tags": ["api keys"],
    "parameters": [API_KEY_ID_PARAMETER],
    "responses": {200: ApiKeySerializer, **errors(401, 403, 404)},
    "description": "The key, with what it has spent in the current UTC day and month and in "
    "all." + API_KEY_MANAGEMENT,
}
API_KEY_UPDATE: dict[str, Any] = {
    "methods": ["PATCH"],
    "tags": ["api keys"],
    "parameters": [API_KEY_ID_PARAMETER],
    "request": ApiKeyWriteSerializer,
    "responses": {200: ApiKeySerializer, **errors(*WRITES, 404, 409)},
    "description": (
        "Change a live key's name, scopes, limits (only those named; null removes one), "
        "agents (null: any) or expiry; what it spent is kept. 409 `api_key_revoked` for a "
        "revoked key." + API_KEY_MANAGEMENT
    ),
}
API_KEY_REVOKE: dict[str, Any] = {
    "methods": ["DELETE"],
    "tags": ["api keys"],
    "parameters": [API_KEY_ID_PARAMETER],
    "responses": {204: None, **errors(401, 403, 404)},
    "description": (
        "Revoke the key at once: its next request gets 401. Tasks it already submitted still "
        "run and settle. Revoking it again is 204 too." + API_KEY_MANAGEMENT
    ),
}
