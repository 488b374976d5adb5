"""Agents: a catalogue every signed-in user reads; only an agent's owner changes it or
uploads its binaries (anybody else gets 403 `not_agent_owner`). An API key limited to some
agents changes and uploads to those alone, and creates none (403 `agent_not_allowed`)."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, parser_classes, throttle_classes
from rest_framework.request import Request
from rest_framework.response import Response

from marketplace import selectors
from marketplace.agent_openapi import agent_openapi
from marketplace.api import schema
from marketplace.api.auth_keys import ANY_KEY, agent_allowlist, key_scope
from marketplace.api.common import current_user, page_response, valid
from marketplace.api.parsers import WasmUploadParser
from marketplace.api.serializers.agents import (
    AgentQuerySerializer,
    AgentSerializer,
    AgentUpdateSerializer,
    AgentWriteSerializer,
    BinarySerializer,
    BinaryUploadSerializer,
    ReputationSerializer,
    VersionSerializer,
)
from marketplace.binaries import UploadRateThrottle, binary_upload
from marketplace.errors import AgentHasNoBinary, AgentNotAllowed, AgentNotFound
from marketplace.evaluators import accepted_evaluators_set
from marketplace.exceptions import NotAgentOwner
from marketplace.services import agent_create, agent_update

REPUTATION_EVENTS_SHOWN = 100


@extend_schema(**schema.AGENTS_LIST)
@extend_schema(**schema.AGENTS_CREATE)
@key_scope(GET=ANY_KEY, POST="agents:write")
@api_view(["GET", "POST"])
def agents(request: Request) -> Response:
    if request.method == "POST":
        allowlist = agent_allowlist(request)
        if allowlist is not None:
            raise AgentNotAllowed(
                "This API key is limited to its agents: it cannot create one.",
                fields={"agents": sorted(allowlist.slugs)},
            )
        owner = current_user(request)
        data = valid(AgentWriteSerializer, request.data, context={"schema_user": owner.pk})
        evaluators = data.pop("accepted_evaluators", None)
        with transaction.atomic():
            created = agent_create(owner=owner, **data)
            if evaluators is not None:
                accepted_evaluators_set(agent=created, slugs=evaluators)
        found = selectors.agent_by_slug(created.slug, missing=AgentNotFound)
        return Response(AgentSerializer(found).data, status=201)
    query = valid(AgentQuerySerializer, request.query_params)
    listing = selectors.agent_catalogue(
        order_by=AgentQuerySerializer.ORDERINGS[query["ordering"]],
        tag=query.get("tag"),
        status=query.get("status"),
    )
    return page_response(request, listing, AgentSerializer)


@extend_schema(**schema.AGENT_GET)
@extend_schema(**schema.AGENT_UPDATE)
@key_scope(GET=ANY_KEY, PATCH="agents:write")
@api_view(["GET", "PATCH"])
def agent(request: Request, slug: str) -> Response:
    if request.method == "PATCH":
        _check_allowlist(request, slug)
        owned = selectors.agent_owned_by(
            current_user(request), slug, missing=AgentNotFound, not_owner=NotAgentOwner
        )
        changes = valid(
            AgentUpdateSerializer,
            request.data,
            partial=True,
            context={"schema_user": owned.owner_id},
        )
        evaluators = changes.pop("accepted_evaluators", None)
        with transaction.atomic():
            agent_update(agent=owned, **changes)
            if evaluators is not None:
                accepted_evaluators_set(agent=owned, slugs=evaluators)
    # Read back through the catalogue query, with the score the listing shows.
    return Response(AgentSerializer(selectors.agent_by_slug(slug, missing=AgentNotFound)).data)


@extend_schema(**schema.AGENT_BINARY_UPLOAD)
@key_scope(POST="agents:write")
@api_view(["POST"])
@parser_classes([WasmUploadParser])
@throttle_classes([UploadRateThrottle])
def agent_binaries(request: Request, slug: str) -> Response:
    _check_allowlist(request, slug)
    owned = selectors.agent_owned_by(
        current_user(request), slug, missing=AgentNotFound, not_owner=NotAgentOwner
    )
    previous = owned.current_binary_id
    data = valid(BinaryUploadSerializer, request.data)
    binary = binary_upload(
        agent=owned,
        data=data["wasm"],
        input_schema=data["input_schema"],
        output_schema=data["output_schema"],
    )
    # Uploading the current binary with its contract again changes nothing: 200, not 201.
    status = 200 if binary.pk == previous else 201
    return Response(BinarySerializer(binary).data, status=status)


def _check_allowlist(request: Request, slug: str) -> None:
    # Before the owner's check: a key learns nothing about agents outside its list.
    allowlist = agent_allowlist(request)
    if allowlist is not None:
        allowlist.check(slug=slug)


@extend_schema(**schema.AGENT_REPUTATION)
@key_scope(GET=ANY_KEY)
@api_view(["GET"])
def agent_reputation(request: Request, slug: str) -> Response:
    found = selectors.agent_by_slug(slug, missing=AgentNotFound)
    standing = selectors.agent_standing(found, events=REPUTATION_EVENTS_SHOWN)
    return Response(ReputationSerializer(standing).data)


@extend_schema(**schema.AGENT_VERSIONS)
@key_scope(GET=ANY_KEY)
@api_view(["GET"])
def agent_versions(request: Request, slug: str) -> Response:
    found = selectors.agent_by_slug(slug, missing=AgentNotFound)
    return page_response(request, selectors.agent_versions(found), VersionSerializer)


@extend_schema(**schema.AGENT_OPENAPI)
@key_scope(GET=ANY_KEY)
@api_view(["GET"])
def agent_openapi_document(request: Request, slug: str) -> Response:
    found = selectors.agent_by_slug(slug, missing=AgentNotFound)
    if found.current_binary is None:
        raise AgentHasNoBinary()
    return Response(agent_openapi(found, server=request.build_absolute_uri("/").rstrip("/")))
