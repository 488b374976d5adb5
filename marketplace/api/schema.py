"""The API's OpenAPI description, kept out of the view code.

Views apply one bundle each: `@extend_schema(**schema.AGENT_GET)`. The bundles hold what
drf-spectacular cannot infer (tags, operation ids, request bodies, examples, error
responses); `errors()` and `paginated()` build their common parts. View functions carry
no docstrings: drf-spectacular would publish them as operation descriptions.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    inline_serializer,
)
from rest_framework import serializers

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
from marketplace.api.serializers.auth import (
    CredentialsSerializer,
    RegisteredSerializer,
    RegisterSerializer,
    TokenSerializer,
)
from marketplace.api.serializers.channels import (
    ChannelOpenSerializer,
    ChannelSerializer,
    KeyRegisterSerializer,
    KeySerializer,
)
from marketplace.api.serializers.receipts import (
    PublicKeySerializer,
    PublicKeysSerializer,
    ReceiptSerializer,
    VerificationSerializer,
)
from marketplace.api.serializers.tasks import (
    TaskListSerializer,
    TaskQuerySerializer,
    TaskSerializer,
    TaskSubmitSerializer,
)
from marketplace.api.serializers.wallet import (
    DepositRequestSerializer,
    DepositSerializer,
    TransferQuerySerializer,
    TransferSerializer,
    WalletSerializer,
)
from marketplace.idempotency import HEADER as IDEMPOTENCY_HEADER

# --- the error envelope ------------------------------------------------------------------

# The envelope every failure uses; also published as the `Error` schema component.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code."},
                "message": {"type": "string", "description": "What went wrong, for people."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Per-field details (validation messages, limits).",
                },
            },
            "required": ["code", "message", "fields"],
        }
    },
    "required": ["error"],
}


def add_error_component(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular hook: publish the error envelope every error response refers to."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    return result


ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR_MEANINGS = {
    400: "Invalid input (`validation_error`, `parse_error` or a domain code).",
    401: "No or invalid credentials (`not_authenticated`, `authentication_failed`; "
    "`token_expired` for an account token past its `TOKEN_TTL_DAYS`).",
    402: "The wallet cannot cover it (`insufficient_funds`), or the API key's spending "
    "limits cannot (`spend_limit_exceeded`).",
    403: "Not allowed (`permission_denied`, `not_agent_owner`, `funding_unavailable`; with an "
    "API key, `scope_required` or `agent_not_allowed`).",
    404: "No such object, or not yours (`not_found`, `task_not_found`, `agent_not_found`).",
    409: "Conflicts with the current state or with an earlier use of the Idempotency-Key.",
    413: "Too large (`request_too_large`, `input_too_large`, `wasm_too_large`).",
    415: "Unsupported Content-Type (`unsupported_media_type`).",
    429: "Too many attempts (`throttled`), or too many tasks in flight (`too_many_tasks`); "
    "see Retry-After.",
    503: "No answer yet from the payment provider (`deposit_pending`): the deposit stays "
    "pending and is credited once confirmed; repeat with the same Idempotency-Key.",
}
AUTHENTICATED = (401,)
WRITES = (400, 401, 403, 413, 415)


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error responses of an operation, each the envelope with what its status means."""
    return {
        status: OpenApiResponse(ERROR_REF, description=ERROR_MEANINGS[status])
        for status in sorted(set(statuses))
    }


def paginated(name: str, serializer: type[serializers.Serializer]) -> serializers.Serializer:
    """A page of `serializer` objects, as `common.page_response` answers it."""
    return inline_serializer(
        name=name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer(many=True),
        },
    )


PREFER_WAIT_PARAMETER = OpenApiParameter(
    "Prefer",
    str,
    OpenApiParameter.HEADER,
    description="`wait=N` (RFC 7240; N clamped to 1–60): 201 with the task once final, or 202 "
    "with it as it stands after N s, both with `Preference-Applied: wait=N`.",
)
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    {"type": "string", "minLength": 1, "maxLength": 100, "pattern": "^[!-~]+$"},
    OpenApiParameter.HEADER,
    description=(
        "Makes the request safe to retry: a repeat with the same key and body returns the "
        "first response (409 `idempotency_in_progress` while the first is still being "
        "answered: retry shortly); the same key with another body is 409 "
        "`idempotency_conflict`. Failed requests are not remembered. "
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


# --- auth ---------------------------------------------------------------------------

REGISTER: dict[str, Any] = {
    "tags": ["auth"],
    "request": RegisterSerializer,
    "examples": [
        OpenApiExample(
            "Register",
            value={"username": "dora", "password": "a long enough passphrase"},
            request_only=True,
        )
    ],
    "responses": {201: RegisteredSerializer, **errors(400, 413, 415, 429)},
    "auth": [],
}
TOKEN: dict[str, Any] = {
    "tags": ["auth"],
    "request": CredentialsSerializer,
    "responses": {200: TokenSerializer, **errors(400, 413, 415, 429)},
    "auth": [],
}

# --- wallet ---------------------------------------------------------------------------

WALLET: dict[str, Any] = {
    "tags": ["wallet"],
    "responses": {200: WalletSerializer, **errors(*AUTHENTICATED)},
}
DEPOSIT: dict[str, Any] = {
    "tags": ["wallet"],
    "request": DepositRequestSerializer,
    "examples": [OpenApiExample("Add 5 CR", value={"amount": 5_000_000}, request_only=True)],
    "parameters": [IDEMPOTENCY_PARAMETER],
    "responses": {201: DepositSerializer, **errors(*WRITES, 409, 503)},
}
TRANSFERS: dict[str, Any] = {
    "operation_id": "wallet_transfers_list",
    "tags": ["wallet"],
    "parameters": [TransferQuerySerializer],
    "responses": {
        200: paginated("PaginatedTransferList", TransferSerializer),
        **errors(400, 401, 404),
    },
}

# --- agents ---------------------------------------------------------------------------

AGENTS_LIST: dict[str, Any] = {
    "methods": ["GET"],
    "operation_id": "agents_list",
    "tags": ["agents"],
    "parameters": [AgentQuerySerializer],
    "responses": {
        200: paginated("PaginatedAgentList", AgentSerializer),
        **errors(400, 401, 404),
    },
}
AGENTS_CREATE: dict[str, Any] = {
    "methods": ["POST"],
    "tags": ["agents"],
    "request": AgentWriteSerializer,
    "examples": [
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
    "responses": {201: AgentSerializer, **errors(*WRITES, 409)},
}
AGENT_GET: dict[str, Any] = {
    "methods": ["GET"],
    "tags": ["agents"],
    "parameters": [SLUG_PARAMETER],
    "responses": {200: AgentSerializer, **errors(401, 404)},
}
AGENT_UPDATE: dict[str, Any] = {
    "methods": ["PATCH"],
    "tags": ["agents"],
    "parameters": [SLUG_PARAMETER],
    "request": AgentUpdateSerializer,
    "responses": {200: AgentSerializer, **errors(*WRITES, 404)},
}
AGENT_BINARY_UPLOAD: dict[str, Any] = {
    "tags": ["agents"],
    "parameters": [SLUG_PARAMETER],
    "request": {"multipart/form-data": BinaryUploadSerializer},
    "responses": {
        201: OpenApiResponse(BinarySerializer, description="A new version, now current."),
        200: OpenApiResponse(BinarySerializer, description="Already the current binary."),
        **errors(*WRITES, 404, 429),
    },
}
AGENT_VERSIONS: dict[str, Any] = {
    "tags": ["agents"],
    "parameters": [SLUG_PARAMETER],
    "responses": {
        200: paginated("PaginatedVersionList", VersionSerializer),
        **errors(401, 404),
    },
    "description": "Every binary version of the agent with its contract (input and output "
    "schema), newest first.",
}
AGENT_OPENAPI: dict[str, Any] = {
    "operation_id": "agents_openapi_retrieve",
    "tags": ["agents"],
    "parameters": [SLUG_PARAMETER],
    "responses": {
        200: OpenApiResponse(
            inline_serializer(
                name="AgentOpenApiDocument",
                fields={"openapi": serializers.CharField(help_text="3.1.0")},
            ),
            description="An OpenAPI 3.1 document with one operation, POST /api/v1/tasks/, "
            "for running this agent's current version: its request's `input` is the "
            "version's input schema, its 201 response's `result.output` is typed by the "
            "output schema, and `x-agent-price` gives the price in µCR.",
        ),
        **errors(401, 404, 409),
    },
}
AGENT_REPUTATION: dict[str, Any] = {
    "tags": ["agents"],
    "parameters": [SLUG_PARAMETER],
    "responses": {200: ReputationSerializer, **errors(401, 404)},
}

# --- tasks ---------------------------------------------------------------------------

TASKS_LIST: dict[str, Any] = {
    "methods": ["GET"],
    "operation_id": "tasks_list",
    "tags": ["tasks"],
    "parameters": [TaskQuerySerializer],
    "responses": {
        200: paginated("PaginatedTaskList", TaskListSerializer),
        **errors(400, 401, 404),
    },
    "description": (
        "Your tasks, each without its `input` and with `result` lacking `output` and "
        "`stderr` (up to a MiB each): `GET tasks/{id}/` has them."
    ),
}
TASK_SUBMIT: dict[str, Any] = {
    "methods": ["POST"],
    "tags": ["tasks"],
    "request": TaskSubmitSerializer,
    "examples": [
        OpenApiExample(
            "Echo with a budget of 0.1 CR",
            value={"agent": "echo", "input": "hello", "budget": 100_000},
            request_only=True,
        )
    ],
    "parameters": [IDEMPOTENCY_PARAMETER, PREFER_WAIT_PARAMETER],
    "responses": {
        201: TaskSerializer,
        202: OpenApiResponse(TaskSerializer, description="`Prefer: wait=N`: not final in N s."),
        **errors(*WRITES, 402, 409, 429),
    },
}
TASK: dict[str, Any] = {
    "tags": ["tasks"],
    "responses": {200: TaskSerializer, **errors(401, 404)},
}
TASK_CANCEL: dict[str, Any] = {
    "tags": ["tasks"],
    "request": None,
    "responses": {200: TaskSerializer, **errors(401, 403, 404, 409)},
    "description": (
        "Cancel a queued task and refund its budget. Only queued tasks can be cancelled."
    ),
}

# --- receipts ---------------------------------------------------------------------------

TASK_RECEIPT: dict[str, Any] = {
    "tags": ["receipts"],
    "responses": {200: ReceiptSerializer, **errors(401, 404)},
    "description": (
        "The signed receipt of a settled task; 404 `receipt_not_ready` until it settles."
    ),
}
RECEIPT_PUBLIC_KEY: dict[str, Any] = {
    "tags": ["receipts"],
    "responses": {200: PublicKeySerializer},
    "auth": [],
    "description": "The key that signs new receipts. Older receipts may name another key of "
    "the ring: see `receipts/public-keys/`.",
}
RECEIPT_PUBLIC_KEYS: dict[str, Any] = {
    "tags": ["receipts"],
    "responses": {200: PublicKeysSerializer},
    "auth": [],
    "description": "Every key of the platform's signing ring, the current one first. A "
    "receipt's `key_id` names the key to check it with; keys retired from signing stay "
    "listed while receipts signed with them are to be verified.",
}
RECEIPT_VERIFY: dict[str, Any] = {
    "tags": ["receipts"],
    "request": ReceiptSerializer,
    "responses": {200: VerificationSerializer, **errors(400, 413, 415)},
    "auth": [],
    "description": (
        "Checks a receipt's signature against the platform's key its `key_id` names (the "
        "current key or an older one of the ring). A well-formed receipt "
        "that does not verify (altered, another key, bad base64) is `valid: false`; a body "
        "that is not a receipt object (missing or non-string fields) is 400."
    ),
}

# --- payment channels and voucher keys ------------------------------------------------------

CHANNELS_LIST: dict[str, Any] = {
    "methods": ["GET"],
    "operation_id": "channels_list",
    "tags": ["channels"],
    "responses": {
        200: paginated("PaginatedChannelList", ChannelSerializer),
        **errors(401, 404),
    },
}
CHANNEL_OPEN: dict[str, Any] = {
    "methods": ["POST"],
    "tags": ["channels"],
    "request": ChannelOpenSerializer,
    "examples": [
        OpenApiExample(
            "10 CR for echo", value={"agent": "echo", "deposit": 10_000_000}, request_only=True
        )
    ],
    "parameters": [IDEMPOTENCY_PARAMETER],
    "responses": {201: ChannelSerializer, **errors(*WRITES, 402, 409)},
}
CHANNEL: dict[str, Any] = {
    "tags": ["channels"],
    "responses": {200: ChannelSerializer, **errors(401, 404)},
}
CHANNEL_CLOSE: dict[str, Any] = {
    "tags": ["channels"],
    "request": None,
    "responses": {200: ChannelSerializer, **errors(401, 404, 409)},
}
KEYS_LIST: dict[str, Any] = {
    "methods": ["GET"],
    "operation_id": "keys_list",
    "tags": ["channels"],
    "responses": {200: paginated("PaginatedKeyList", KeySerializer), **errors(401, 404)},
    "description": "Your voucher keys, revoked ones included, newest first.",
}
KEY_REGISTER: dict[str, Any] = {
    "methods": ["POST"],
    "tags": ["channels"],
    "request": KeyRegisterSerializer,
    "responses": {201: KeySerializer, **errors(*WRITES, 409)},
    "description": (
        "Register an Ed25519 public key that signs your vouchers (again: the same key back). "
        "409 `too_many_keys` beyond `MAX_REQUESTER_KEYS` live keys (revoke one first); 409 "
        "`key_revoked` for a key you revoked."
    ),
}
KEY_REVOKE: dict[str, Any] = {
    "tags": ["channels"],
    "parameters": [
        OpenApiParameter("key_pk", int, OpenApiParameter.PATH, description="The key's `id`.")
    ],
    "responses": {204: None, **errors(401, 404)},
    "description": (
        "Revoke a key at once: it verifies no new voucher (vouchers it signed before stay "
        "accepted). Revoking it again is 204 too."
    ),
}
