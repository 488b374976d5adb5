"""Registration and login: the two public endpoints, throttled per client address, and logins
per username too, in the same buckets as the pages (marketplace/login_throttle.py)."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import BaseAuthentication
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    permission_classes,
    throttle_classes,
)
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.account_tokens import account_token_revoke, account_token_rotate
from marketplace.api import schema, schema_auth
from marketplace.api.common import AuthRateThrottle, current_user, valid
from marketplace.api.serializers.auth import (
    CredentialsSerializer,
    RegisteredSerializer,
    RegisterSerializer,
    TokenSerializer,
)
from marketplace.exceptions import InvalidCredentials
from marketplace.login_throttle import (
    LoginAddressThrottle,
    LoginUsernameThrottle,
    SignupThrottle,
    signup_count,
)
from marketplace.services import user_register, user_token


@extend_schema(**schema.REGISTER)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
@throttle_classes([AuthRateThrottle, SignupThrottle])
def register(request: Request) -> Response:
    data = valid(RegisterSerializer, request.data)
    user, token = user_register(username=data["username"], password=data["password"])
    signup_count(request)
    body = {"id": user.pk, "username": user.username, "token": token}
    return Response(RegisteredSerializer(body).data, status=201)


@extend_schema(**schema.TOKEN)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
# The login pages' buckets too, looked at before the password is checked.
@throttle_classes([AuthRateThrottle, LoginAddressThrottle, LoginUsernameThrottle])
def token(request: Request) -> Response:
    data = valid(CredentialsSerializer, request.data)
    user = authenticate(request._request, username=data["username"], password=data["password"])
    if user is None:
        raise InvalidCredentials()
    return Response(TokenSerializer({"token": user_token(user=user)}).data)


# --- the account token: rotate and revoke (the token itself or a session, never an API key;
# these views declare no key scope, so a key gets 403 `scope_required`) -----------------------


@extend_schema(**schema_auth.TOKEN_ROTATE)
@api_view(["POST"])
def token_rotate(request: Request) -> Response:
    new = account_token_rotate(user=current_user(request))
    # The one response that carries the new token: no cache may keep it.
    return Response(TokenSerializer({"token": new}).data, headers={"Cache-Control": "no-store"})


@api_view(["DELETE"])
def token_revoke(request: Request) -> Response:
    account_token_revoke(user=current_user(request))
    return Response(status=204)


# `/auth/token/`: logging in (POST, with nothing but the password) and revoking the token
# (DELETE, with the token or a session) share the path. This view only hands the request on,
# so each keeps its own authentication, throttles and errors. (No docstring: drf-spectacular
# would publish it as the operations' description.)
class TokenEndpoint(APIView):
    authentication_classes: list[type[BaseAuthentication]] = []
    permission_classes = [AllowAny]

    def perform_authentication(self, request: Request) -> None:
        # Not even "anonymous": DRF would set that on the request `token_revoke` reads its
        # session from.
        pass

    @extend_schema(**schema.TOKEN)
    def post(self, request: Request) -> Response:
        return token(request._request)

    @extend_schema(**schema_auth.TOKEN_REVOKE)
    def delete(self, request: Request) -> Response:
        return token_revoke(request._request)
