"""Registration and login: the two public endpoints, throttled per client address, and logins
per username too, in the same buckets as the pages (marketplace/login_throttle.py)."""

from __future__ import annotations

from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    permission_classes,
    throttle_classes,
)
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from marketplace.api import schema
from marketplace.api.common import AuthRateThrottle, valid
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
