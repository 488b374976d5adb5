"""`Authorization: Token <key>`: the account token, refused once it has expired.

An expired token is 401 `token_expired` (not the `authentication_failed` of a token that
never existed, was rotated or was revoked), so a client knows to log in again with its
password (`POST /api/v1/auth/token/`), which issues a new one. See `marketplace.account_tokens`.
"""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from marketplace.account_tokens import account_token_expired


class TokenExpired(exceptions.APIException):
    status_code = 401
    default_code = "token_expired"
    default_detail = (
        "This token has expired; log in again (POST /api/v1/auth/token/) for a new one."
    )
    # What TokenAuthentication answers on every other 401 (DRF's handler sends it).
    auth_header = "Token"


class AccountTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        user, token = super().authenticate_credentials(key)
        if account_token_expired(token):
            raise TokenExpired()
        return user, token
