"""Django REST framework's and drf-spectacular's settings. Read by the settings, so it imports
nothing that needs Django set up."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from marketplace.env import env_int, env_str

# DRF's rate format: "10/minute", "5/hour" (s, sec, m, min, h, hour, d, day).
_RATE = re.compile(r"[0-9]+/(s|sec|second|m|min|minute|h|hour|d|day)")


def throttle_rate(name: str, default: str) -> str:
    """A rate from the environment, refused at start when DRF could not read it."""
    rate = env_str(name, default)
    if not _RATE.fullmatch(rate):
        raise ImproperlyConfigured(f"{name} must be a rate such as 10/minute, got {rate!r}")
    return rate


def rest_framework_settings(*, upload_rate: str) -> dict[str, Any]:
    return {
        "DEFAULT_AUTHENTICATION_CLASSES": [
            # `Authorization: Token <key>`: the account token, until it expires.
            "marketplace.api.auth_token.AccountTokenAuthentication",
            # `Authorization: Bearer <API key>`: scoped, capped keys (marketplace.apikeys).
            "marketplace.api.auth_keys.ApiKeyAuthentication",
            "rest_framework.authentication.SessionAuthentication",
        ],
        "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
        "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
        "DEFAULT_PAGINATION_CLASS": "marketplace.api.pagination.Pagination",
        "PAGE_SIZE": 50,
        # JSON in and out; the binary upload endpoint alone takes multipart.
        "DEFAULT_PARSER_CLASSES": ["marketplace.api.parsers.JSONParser"],
        "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        "EXCEPTION_HANDLER": "marketplace.exceptions.api_exception_handler",
        "DEFAULT_THROTTLE_RATES": {
            "auth": env_str("API_AUTH_THROTTLE_RATE", "20/minute"),
            "uploads": upload_rate,
        },
        # Proxies in front of the app that append to X-Forwarded-For (0: use the peer
        # address, so a client cannot pick its own throttling identity).
        "NUM_PROXIES": env_int("NUM_PROXIES", 0),
        "TEST_REQUEST_DEFAULT_FORMAT": "json",
    }


SPECTACULAR: dict[str, Any] = {
    "TITLE": "Agent Exchange API",
    "DESCRIPTION": (
        "Requesters pay agents (WASM programs) to run tasks; budgets are held in escrow and "
        "settled on completion. Amounts are integers in micro-credits (1 CR = 1 000 000 µCR). "
        'Every failure is `{"error": {"code", "message", "fields"}}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from drf-spectacular-sidecar's static files, not from a CDN: the docs page
    # loads no code that another host could change.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "marketplace.models.Task.Status",
        "AgentStatusEnum": "marketplace.models.Agent.Status",
        "EscrowStatusEnum": "escrow.models.Escrow.Status",
        "FailureReasonEnum": "marketplace.models.Task.FailureReason",
        "TransferKindEnum": "escrow.models.Transfer.Kind",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "marketplace.api.schema.add_error_component",
    ],
}
