"""API keys: create (the key is shown once), list, read, change and revoke.

Only a session or the account's token manages keys: these views declare no key scope, so
a request made with a key is refused (403 `scope_required`) — a key can never mint a
broader key or lift its own caps. A key is its user's alone; anybody else gets 404.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from marketplace import selectors
from marketplace.api import schema_apikeys as schema
from marketplace.api.common import current_user, page_response, valid
from marketplace.api.serializers.apikeys import (
    ApiKeyCreatedSerializer,
    ApiKeySerializer,
    ApiKeyWriteSerializer,
)
from marketplace.apikeys import (
    api_key_create,
    api_key_revoke,
    api_key_update,
    api_keys_settle_channels,
)
from marketplace.errors import ApiKeyNotFound


@extend_schema(**schema.API_KEYS_LIST)
@extend_schema(**schema.API_KEY_CREATE)
@api_view(["GET", "POST"])
def api_keys(request: Request) -> Response:
    user = current_user(request)
    if request.method == "POST":
        data = valid(ApiKeyWriteSerializer, request.data)
        key, raw = api_key_create(user=user, **data)
        created = selectors.api_key_for(user, key.pk, missing=ApiKeyNotFound)
        return Response(ApiKeyCreatedSerializer(created, context={"key": raw}).data, status=201)
    api_keys_settle_channels(user=user)
    return page_response(request, selectors.api_keys_of(user), ApiKeySerializer)


@extend_schema(**schema.API_KEY_GET)
@extend_schema(**schema.API_KEY_UPDATE)
@extend_schema(**schema.API_KEY_REVOKE)
@api_view(["GET", "PATCH", "DELETE"])
def api_key(request: Request, key_id: Any) -> Response:
    user = current_user(request)
    found = selectors.api_key_for(user, key_id, missing=ApiKeyNotFound)
    if request.method == "DELETE":
        api_key_revoke(key=found)
        return Response(status=204)
    if request.method == "PATCH":
        changes = valid(ApiKeyWriteSerializer, request.data, partial=True)
        api_key_update(key=found, **changes)
    else:
        api_keys_settle_channels(user=user)
    found = selectors.api_key_for(user, key_id, missing=ApiKeyNotFound)
    return Response(ApiKeySerializer(found).data)
