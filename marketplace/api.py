"""JSON API v1: thin views. Each validates its input, calls one service, serializes the result.

Who may see what is decided in the `_…_for` helpers below, in one place: agents are a
catalogue every signed-in user can read (only the owner changes one); tasks, wallets and
ledger lines belong to one user, and anybody else gets the same 404 as for an object that
does not exist.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.db.models import F, Q, QuerySet, Sum
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.decorators import (
    api_view,
    authentication_classes,
    parser_classes,
    permission_classes,
    throttle_classes,
)
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

from escrow.channels import channel_close, channel_open, key_register
from escrow.errors import ChannelNotFound
from escrow.models import Account, Escrow, PaymentChannel, Transfer
from escrow.services import deposit_create
from marketplace.binaries import binary_upload
from marketplace.errors import AgentNotFound, AgentUnavailable
from marketplace.exceptions import InvalidCredentials, NotAgentOwner, TaskNotFound
from marketplace.idempotency import HEADER as IDEMPOTENCY_HEADER
from marketplace.idempotency import idempotent
from marketplace.models import Agent, Task
from marketplace.serializers import (
    AgentQuerySerializer,
    AgentSerializer,
    AgentUpdateSerializer,
    AgentWriteSerializer,
    BinarySerializer,
    BinaryUploadSerializer,
    ChannelOpenSerializer,
    ChannelSerializer,
    CredentialsSerializer,
    DepositRequestSerializer,
    DepositSerializer,
    KeyRegisterSerializer,
    KeySerializer,
    Pagination,
    RegisteredSerializer,
    RegisterSerializer,
    ReputationSerializer,
    TaskQuerySerializer,
    TaskSerializer,
    TaskSubmitSerializer,
    TokenSerializer,
    TransferQuerySerializer,
    TransferSerializer,
    WalletSerializer,
    WasmUploadParser,
)
from marketplace.services import agent_create, agent_update, task_cancel, task_submit
from marketplace.services import user_register as user_register_service
from marketplace.services import user_token as user_token_service
from reputation.models import INITIAL_SCORE, AgentReputation, ReputationEvent

REPUTATION_EVENTS_SHOWN = 100

# --- schema helpers ----------------------------------------------------------------------

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_MEANINGS = {
    400: "Invalid input (`validation_error`, `parse_error` or a domain code).",
    401: "No or invalid credentials (`not_authenticated`, `authentication_failed`).",
    402: "The wallet cannot cover it (`insufficient_funds`).",
    403: "Not allowed (`permission_denied`, `not_agent_owner`, `funding_unavailable`).",
    404: "No such object, or not yours (`not_found`, `task_not_found`, `agent_not_found`).",
    409: "Conflicts with the current state or with an earlier use of the Idempotency-Key.",
    413: "Too large (`request_too_large`, `input_too_large`, `wasm_too_large`).",
    415: "Unsupported Content-Type (`unsupported_media_type`).",
    429: "Too many attempts (`throttled`); see Retry-After.",
}
AUTHENTICATED = (401,)
WRITES = (400, 401, 403, 413, 415)


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        status: OpenApiResponse(ERROR_REF, description=ERROR_MEANINGS[status])
        for status in sorted(set(statuses))
    }


def paginated(name: str, serializer: type[serializers.Serializer]) -> serializers.Serializer:
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer(many=True),
        },
    )


IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[!-~]+$"},
    OpenApiParameter.HEADER,
    description=(
        "Makes the request safe to retry: a repeat with the same key and body returns the "
        "first response; the same key with another body is 409 `idempotency_conflict`. "
        "1–100 printable ASCII characters; keys are per user."
    ),
)


SLUG_PARAMETER = OpenApiParameter(
    "slug",
    str,
    OpenApiParameter.PATH,
    description="The agent's slug.",
    examples=[OpenApiExample("echo", value="echo")],
)


# --- plumbing ---------------------------------------------------------------------------


class AuthRateThrottle(SimpleRateThrottle):
    """Registration and login, per client address: slows down password guessing."""

    scope = "auth"

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class DocsView(SpectacularSwaggerView):
    """The browsable API page. It renders HTML; its errors are still the JSON envelope."""

    http_method_names = ["get", "head"]

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


def _valid(serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any) -> Any:
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def _page(
    request: Request,
    queryset: QuerySet,
    serializer_class: type[serializers.Serializer],
    **kwargs: Any,
) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request)
    return paginator.get_paginated_response(serializer_class(page, many=True, **kwargs).data)


def _user(request: Request) -> User:
    # Every view here but the public ones requires authentication (the default permission).
    return cast(User, request.user)


# --- access ---------------------------------------------------------------------------


def _agents() -> QuerySet[Agent]:
    return Agent.objects.select_related("owner", "current_binary").annotate(
        score=F("reputation__score")
    )


def _agent_for(slug: str) -> Agent:
    agent = _agents().filter(slug=slug).first()
    if agent is None:
        raise AgentNotFound()
    return agent


def _agent_owned_by(user: Any, slug: str) -> Agent:
    agent = _agent_for(slug)
    if agent.owner_id != user.pk:
        raise NotAgentOwner()
    return agent


def _tasks_of(user: Any) -> QuerySet[Task]:
    return Task.objects.filter(requester=user).select_related("agent", "escrow")


def task_for(user: Any, task_id: Any) -> Task:
    """The user's own task; another user's is as absent as one that never existed."""
    task = _tasks_of(user).filter(pk=task_id).first()
    if task is None:
        raise TaskNotFound()
    return task


def _wallet_of(user: Any) -> Account | None:
    return Account.objects.filter(kind=Account.Kind.WALLET, user=user).first()


# --- auth ---------------------------------------------------------------------------


@extend_schema(
    tags=["auth"],
    request=RegisterSerializer,
    examples=[
        OpenApiExample(
            "Register",
            value={"username": "dora", "password": "a long enough passphrase"},
            request_only=True,
        )
    ],
    responses={201: RegisteredSerializer, **errors(400, 413, 415, 429)},
    auth=[],
)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
@throttle_classes([AuthRateThrottle])
def register(request: Request) -> Response:
    data = _valid(RegisterSerializer, request.data)
    user, token = user_register_service(username=data["username"], password=data["password"])
    body = {"id": user.pk, "username": user.username, "token": token}
    return Response(RegisteredSerializer(body).data, status=201)


@extend_schema(
    tags=["auth"],
    request=CredentialsSerializer,
    responses={200: TokenSerializer, **errors(400, 413, 415, 429)},
    auth=[],
)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
@throttle_classes([AuthRateThrottle])
def token(request: Request) -> Response:
    data = _valid(CredentialsSerializer, request.data)
    user = authenticate(request._request, username=data["username"], password=data["password"])
    if user is None:
        raise InvalidCredentials()
    return Response(TokenSerializer({"token": user_token_service(user=user)}).data)


# --- wallet ---------------------------------------------------------------------------


@extend_schema(tags=["wallet"], responses={200: WalletSerializer, **errors(*AUTHENTICATED)})
@api_view(["GET"])
def wallet(request: Request) -> Response:
    account = _wallet_of(_user(request))
    held = 0
    if account is not None:
        held = (
            Escrow.objects.filter(payer=account, status=Escrow.Status.FUNDED).aggregate(
                held=Sum("amount")
            )["held"]
            or 0
        )
    in_channels = (
        PaymentChannel.objects.filter(requester=_user(request))
        .exclude(status=PaymentChannel.Status.SETTLED)
        .aggregate(held=Sum("deposit"))["held"]
        or 0
    )
    summary = {
        "balance": account.balance if account is not None else 0,
        "held_in_escrow": held,
        "in_channels": in_channels,
    }
    return Response(WalletSerializer(summary).data)


@extend_schema(
    tags=["wallet"],
    request=DepositRequestSerializer,
    examples=[OpenApiExample("Add 5 CR", value={"amount": 5_000_000}, request_only=True)],
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={201: DepositSerializer, **errors(*WRITES, 409)},
)
@api_view(["POST"])
def deposits(request: Request) -> Response:
    user = _user(request)

    def run(key: str | None) -> Response:
        data = _valid(DepositRequestSerializer, request.data)
        transfer = deposit_create(user_id=user.pk, amount=data["amount"], idempotency_key=key)
        balance = Account.objects.values_list("balance", flat=True).get(
            pk=transfer.credit_account_id
        )
        body = {"transfer_id": transfer.pk, "amount": transfer.amount, "balance": balance}
        return Response(DepositSerializer(body).data, status=201)

    return idempotent(request, user, run)


@extend_schema(
    operation_id="wallet_transfers_list",
    tags=["wallet"],
    parameters=[TransferQuerySerializer],
    responses={
        200: paginated("PaginatedTransferList", TransferSerializer),
        **errors(400, 401, 404),
    },
)
@api_view(["GET"])
def transfers(request: Request) -> Response:
    query = _valid(TransferQuerySerializer, request.query_params)
    account = _wallet_of(_user(request))
    wallet_id = account.pk if account is not None else None
    lines = Transfer.objects.filter(
        Q(debit_account_id=wallet_id) | Q(credit_account_id=wallet_id)
    ).order_by("-id")
    if "kind" in query:
        lines = lines.filter(kind=query["kind"])
    return _page(request, lines, TransferSerializer, context={"wallet_id": wallet_id})


# --- agents ---------------------------------------------------------------------------


@extend_schema(
    methods=["GET"],
    operation_id="agents_list",
    tags=["agents"],
    parameters=[AgentQuerySerializer],
    responses={200: paginated("PaginatedAgentList", AgentSerializer), **errors(400, 401, 404)},
)
@extend_schema(
    methods=["POST"],
    tags=["agents"],
    request=AgentWriteSerializer,
    examples=[
        OpenApiExample(
            "A word counter",
            value={
                "slug": "wordcount",
                "name": "Word count",
                "description": "Counts the words of its input; answers in JSON.",
                "tags": ["text", "json"],
                "base_fee": 1_000,
                "fuel_price": 2_000,
            },
            request_only=True,
        )
    ],
    responses={201: AgentSerializer, **errors(*WRITES, 409)},
)
@api_view(["GET", "POST"])
def agents(request: Request) -> Response:
    if request.method == "POST":
        data = _valid(AgentWriteSerializer, request.data)
        agent = agent_create(owner=_user(request), **data)
        return Response(AgentSerializer(_agent_for(agent.slug)).data, status=201)
    query = _valid(AgentQuerySerializer, request.query_params)
    listing = _agents().order_by(*AgentQuerySerializer.ORDERINGS[query["ordering"]])
    if "tag" in query:
        # Tags are validated to [a-z0-9-], so they are safe inside the pattern.
        listing = listing.filter(tags__regex=rf"(^| ){query['tag']}( |$)")
    if "status" in query:
        listing = listing.filter(status=query["status"])
    return _page(request, listing, AgentSerializer)


@extend_schema(
    methods=["GET"],
    tags=["agents"],
    parameters=[SLUG_PARAMETER],
    responses={200: AgentSerializer, **errors(401, 404)},
)
@extend_schema(
    methods=["PATCH"],
    tags=["agents"],
    parameters=[SLUG_PARAMETER],
    request=AgentUpdateSerializer,
    responses={200: AgentSerializer, **errors(*WRITES, 404)},
)
@api_view(["GET", "PATCH"])
def agent(request: Request, slug: str) -> Response:
    if request.method == "PATCH":
        found = _agent_owned_by(_user(request), slug)
        changes = _valid(AgentUpdateSerializer, request.data, partial=True)
        agent_update(agent=found, **changes)
    return Response(AgentSerializer(_agent_for(slug)).data)


@extend_schema(
    tags=["agents"],
    parameters=[SLUG_PARAMETER],
    request={"multipart/form-data": BinaryUploadSerializer},
    responses={
        201: OpenApiResponse(BinarySerializer, description="A new version, now current."),
        200: OpenApiResponse(BinarySerializer, description="Already the current binary."),
        **errors(*WRITES, 404),
    },
)
@api_view(["POST"])
@parser_classes([WasmUploadParser])
def agent_binaries(request: Request, slug: str) -> Response:
    found = _agent_owned_by(_user(request), slug)
    previous = found.current_binary_id
    data = _valid(BinaryUploadSerializer, request.data)
    binary = binary_upload(agent=found, data=data["wasm"])
    status = 200 if binary.pk == previous else 201
    return Response(BinarySerializer(binary).data, status=status)


@extend_schema(
    tags=["agents"],
    parameters=[SLUG_PARAMETER],
    responses={200: ReputationSerializer, **errors(401, 404)},
)
@api_view(["GET"])
def agent_reputation(request: Request, slug: str) -> Response:
    found = _agent_for(slug)
    standing = AgentReputation.objects.filter(agent=found).first()
    events = ReputationEvent.objects.filter(agent=found).order_by("-id")[:REPUTATION_EVENTS_SHOWN]
    body = {
        "score": standing.score if standing else INITIAL_SCORE,
        "successes": standing.successes if standing else 0,
        "failures": standing.failures if standing else 0,
        "neutral": standing.neutral if standing else 0,
        "events": events,
    }
    return Response(ReputationSerializer(body).data)


# --- tasks ---------------------------------------------------------------------------


@extend_schema(
    methods=["GET"],
    operation_id="tasks_list",
    tags=["tasks"],
    parameters=[TaskQuerySerializer],
    responses={200: paginated("PaginatedTaskList", TaskSerializer), **errors(400, 401, 404)},
)
@extend_schema(
    methods=["POST"],
    tags=["tasks"],
    request=TaskSubmitSerializer,
    examples=[
        OpenApiExample(
            "Echo with a budget of 0.1 CR",
            value={"agent": "echo", "input": "hello", "budget": 100_000},
            request_only=True,
        )
    ],
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={201: TaskSerializer, **errors(*WRITES, 402, 409)},
)
@api_view(["GET", "POST"])
def tasks(request: Request) -> Response:
    user = _user(request)
    if request.method == "POST":

        def run(key: str | None) -> Response:
            data = _valid(TaskSubmitSerializer, request.data)
            if "channel" in data:
                data["channel"] = str(data["channel"])
            task = task_submit(requester=user, idempotency_key=key, **data)
            return Response(TaskSerializer(task_for(user, task.pk)).data, status=201)

        return idempotent(request, user, run)
    query = _valid(TaskQuerySerializer, request.query_params)
    listing = _tasks_of(user).order_by(*TaskQuerySerializer.ORDERINGS[query["ordering"]])
    if "status" in query:
        listing = listing.filter(status=query["status"])
    if "agent" in query:
        listing = listing.filter(agent__slug=query["agent"])
    return _page(request, listing, TaskSerializer)


@extend_schema(tags=["tasks"], responses={200: TaskSerializer, **errors(401, 404)})
@api_view(["GET"])
def task(request: Request, task_id: Any) -> Response:
    return Response(TaskSerializer(task_for(_user(request), task_id)).data)


@extend_schema(
    tags=["tasks"],
    request=None,
    responses={200: TaskSerializer, **errors(401, 403, 404, 409)},
    description="Cancel a queued task and refund its budget. Only queued tasks can be cancelled.",
)
@api_view(["POST"])
def task_cancel_view(request: Request, task_id: Any) -> Response:
    user = _user(request)
    cancelled = task_cancel(task=task_for(user, task_id))
    return Response(TaskSerializer(task_for(user, cancelled.pk)).data)


# --- payment channels and voucher keys ------------------------------------------------------


def _channels_of(user: Any) -> QuerySet[PaymentChannel]:
    """Channels the user pays from or whose agent they own; nobody else sees them."""
    return PaymentChannel.objects.select_related("agent").filter(
        Q(requester=user) | Q(agent__owner=user)
    )


def _channel_for(user: Any, channel_id: Any) -> PaymentChannel:
    channel = _channels_of(user).filter(pk=channel_id).first()
    if channel is None:
        raise ChannelNotFound()
    return channel


@extend_schema(
    methods=["GET"],
    operation_id="channels_list",
    tags=["channels"],
    responses={200: paginated("PaginatedChannelList", ChannelSerializer), **errors(401, 404)},
)
@extend_schema(
    methods=["POST"],
    tags=["channels"],
    request=ChannelOpenSerializer,
    examples=[
        OpenApiExample(
            "10 CR for echo", value={"agent": "echo", "deposit": 10_000_000}, request_only=True
        )
    ],
    parameters=[IDEMPOTENCY_PARAMETER],
    responses={201: ChannelSerializer, **errors(*WRITES, 402, 409)},
)
@api_view(["GET", "POST"])
def channels(request: Request) -> Response:
    user = _user(request)
    if request.method == "POST":

        def run(key: str | None) -> Response:
            data = _valid(ChannelOpenSerializer, request.data)
            agent = data["agent"]
            if agent.status != Agent.Status.ACTIVE:
                raise AgentUnavailable()
            opened = channel_open(
                requester_user_id=user.pk,
                agent_id=agent.pk,
                payee_user_id=agent.owner_id,
                deposit=data["deposit"],
                idempotency_key=key,
            )
            return Response(ChannelSerializer(_channel_for(user, opened.pk)).data, status=201)

        return idempotent(request, user, run)
    return _page(request, _channels_of(user).order_by("-created_at"), ChannelSerializer)


@extend_schema(tags=["channels"], responses={200: ChannelSerializer, **errors(401, 404)})
@api_view(["GET"])
def channel(request: Request, channel_id: Any) -> Response:
    return Response(ChannelSerializer(_channel_for(_user(request), channel_id)).data)


@extend_schema(
    tags=["channels"], request=None, responses={200: ChannelSerializer, **errors(401, 404, 409)}
)
@api_view(["POST"])
def channel_close_view(request: Request, channel_id: Any) -> Response:
    user = _user(request)
    found = _channel_for(user, channel_id)
    channel_close(channel_id=found.pk, by_user_id=user.pk)
    return Response(ChannelSerializer(_channel_for(user, found.pk)).data)


@extend_schema(
    tags=["channels"],
    request=KeyRegisterSerializer,
    responses={201: KeySerializer, **errors(*WRITES)},
)
@api_view(["POST"])
def keys(request: Request) -> Response:
    data = _valid(KeyRegisterSerializer, request.data)
    key = key_register(user_id=_user(request).pk, public_key=data["public_key"])
    return Response(KeySerializer(key).data, status=201)
