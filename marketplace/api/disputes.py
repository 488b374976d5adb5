"""Disputes: the requester opens one on a task; the agent's owner accepts or contests.

No API key scope is declared: a key can't open or answer disputes (403 `scope_required`).
"""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from marketplace.api.common import current_user, page_response, valid
from marketplace.api.schema import paginated
from marketplace.api.serializers.disputes import (
    DisputeContestSerializer,
    DisputeOpenSerializer,
    DisputeSerializer,
)
from marketplace.disputes import dispute_accept, dispute_contest, dispute_file, disputes_of

TAGS = ["disputes"]


@extend_schema(tags=TAGS, request=DisputeOpenSerializer, responses={201: DisputeSerializer})
@api_view(["POST"])
def task_dispute(request: Request, task_id: UUID) -> Response:
    data = valid(DisputeOpenSerializer, request.data)
    dispute = dispute_file(task_id=task_id, user=current_user(request), reason=data["reason"])
    return Response(DisputeSerializer(dispute).data, status=201)


@extend_schema(tags=TAGS, responses={200: paginated("PaginatedDisputeList", DisputeSerializer)})
@api_view(["GET"])
def disputes(request: Request) -> Response:
    return page_response(request, disputes_of(current_user(request)), DisputeSerializer)


@extend_schema(tags=TAGS, request=None, responses={200: DisputeSerializer})
@api_view(["POST"])
def dispute_accept_view(request: Request, dispute_id: int) -> Response:
    dispute = dispute_accept(dispute_id=dispute_id, user=current_user(request))
    return Response(DisputeSerializer(dispute).data)


@extend_schema(tags=TAGS, request=DisputeContestSerializer, responses={200: DisputeSerializer})
@api_view(["POST"])
def dispute_contest_view(request: Request, dispute_id: int) -> Response:
    data = valid(DisputeContestSerializer, request.data)
    dispute = dispute_contest(
        dispute_id=dispute_id, user=current_user(request), statement=data["statement"]
    )
    return Response(DisputeSerializer(dispute).data)
