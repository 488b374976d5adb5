"""Payment channels and voucher keys. A channel is seen by the user paying from it and by
its agent's owner, a key by its user; anybody else gets 404 `not_found`, as for one that
never existed. An API key limited to some agents sees and closes only their channels (403
`agent_not_allowed` for the others)."""

from __future__ import annotations

from functools import partial
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from escrow.channels import channel_close, channel_open
from escrow.errors import ChannelNotFound
from escrow.keys import key_register, key_revoke, keys_of
from escrow.models import PaymentChannel
from marketplace import selectors
from marketplace.api import schema
from marketplace.api.auth_keys import agent_allowlist, api_key_of, key_scope
from marketplace.api.common import current_user, page_response, valid
from marketplace.api.serializers.channels import (
    ChannelOpenSerializer,
    ChannelSerializer,
    KeyRegisterSerializer,
    KeySerializer,
)
from marketplace.apikeys import api_key_channel_open
from marketplace.errors import AgentUnavailable
from marketplace.idempotency import idempotent
from marketplace.models import Agent


@extend_schema(**schema.CHANNELS_LIST)
@extend_schema(**schema.CHANNEL_OPEN)
@key_scope(GET="channels:write", POST="channels:write")
@api_view(["GET", "POST"])
def channels(request: Request) -> Response:
    user = current_user(request)
    if request.method == "POST":

        def run(key: str | None) -> Response:
            data = valid(ChannelOpenSerializer, request.data)
            agent = data["agent"]
            # The ledger's channel_open does not look at the agent's status; a suspended
            # agent takes no new channels, as it takes no new tasks.
            if agent.status != Agent.Status.ACTIVE:
                raise AgentUnavailable()
            # Opened with an API key, the deposit counts against the key's limits.
            api_key = api_key_of(request)
            opener = partial(api_key_channel_open, key=api_key) if api_key else channel_open
            opened = opener(
                requester_user_id=user.pk,
                agent_id=agent.pk,
                payee_user_id=agent.owner_id,
                deposit=data["deposit"],
                idempotency_key=key,
            )
            found = selectors.channel_for(user, opened.pk, missing=ChannelNotFound)
            return Response(ChannelSerializer(found).data, status=201)

        return idempotent(request, user, run)
    listing = selectors.channels_of(user)
    allowlist = agent_allowlist(request)
    if allowlist is not None:
        listing = listing.filter(agent_id__in=allowlist.ids)
    return page_response(request, listing, ChannelSerializer)


@extend_schema(**schema.CHANNEL)
@key_scope(GET="channels:write")
@api_view(["GET"])
def channel(request: Request, channel_id: Any) -> Response:
    found = _channel_for(request, channel_id)
    return Response(ChannelSerializer(found).data)


@extend_schema(**schema.CHANNEL_CLOSE)
@key_scope(POST="channels:write")
@api_view(["POST"])
def channel_close_view(request: Request, channel_id: Any) -> Response:
    user = current_user(request)
    found = _channel_for(request, channel_id)
    channel_close(channel_id=found.pk, by_user_id=user.pk)
    closed = selectors.channel_for(user, found.pk, missing=ChannelNotFound)
    return Response(ChannelSerializer(closed).data)


def _channel_for(request: Request, channel_id: Any) -> PaymentChannel:
    found = selectors.channel_for(current_user(request), channel_id, missing=ChannelNotFound)
    allowlist = agent_allowlist(request)
    if allowlist is not None:
        allowlist.check(agent_id=found.agent_id)
    return found


@extend_schema(**schema.KEYS_LIST)
@extend_schema(**schema.KEY_REGISTER)
@key_scope(GET="channels:write", POST="channels:write")
@api_view(["GET", "POST"])
def keys(request: Request) -> Response:
    user = current_user(request)
    if request.method == "POST":
        data = valid(KeyRegisterSerializer, request.data)
        key = key_register(user_id=user.pk, public_key=data["public_key"])
        return Response(KeySerializer(key).data, status=201)
    return page_response(request, keys_of(user_id=user.pk), KeySerializer)


@extend_schema(**schema.KEY_REVOKE)
@api_view(["DELETE"])
def key(request: Request, key_pk: int) -> Response:
    key_revoke(user_id=current_user(request).pk, key_pk=key_pk)
    return Response(status=204)
