"""The OpenAPI description of the account token's endpoints (see `schema` for the
conventions): rotating and revoking it. Logging in (`POST /api/v1/auth/token/`) is `schema.TOKEN`.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse

from marketplace.api.schema import errors
from marketplace.api.serializers.auth import TokenSerializer

# Only the account's own credentials: a session or the token itself, never an API key.
ACCOUNT_ONLY = (
    " With the account token or a session (which also needs its CSRF token); an API key gets "
    "403 `scope_required`."
)
# The router of `/auth/token/` takes no credentials itself, so its DELETE names them here.
TOKEN_OR_SESSION: list[dict[str, list[str]]] = [{"tokenAuth": []}, {"cookieAuth": []}]

TOKEN_ROTATE: dict[str, Any] = {
    "tags": ["auth"],
    "request": None,
    "responses": {200: TokenSerializer, **errors(401, 403)},
    "description": (
        "A new account token, shown in this response only (`Cache-Control: no-store`). The "
        "token before it is refused (401) from now on. The new one expires after "
        "`TOKEN_TTL_DAYS` (90 by default)." + ACCOUNT_ONLY
    ),
}
TOKEN_REVOKE: dict[str, Any] = {
    "tags": ["auth"],
    "operation_id": "auth_token_revoke",
    "request": None,
    "responses": {204: OpenApiResponse(description="Revoked."), **errors(401, 403)},
    "auth": TOKEN_OR_SESSION,
    "description": (
        "Revoke the account token: requests with it get 401 from now on. Logging in again "
        "(`POST /api/v1/auth/token/`) issues a new one." + ACCOUNT_ONLY
    ),
}
