"""One error envelope for the whole API: {"error": {"code", "message", "fields"}}.

Domain errors carry their own stable code and status. DRF's and Django's exceptions get
stable codes here. Anything else is a bug: it is logged and answered with the same
envelope (500), never with an HTML page.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.response import Response

from escrow.errors import DomainError
from execution.engine.errors import EngineError

log = logging.getLogger(__name__)


# --- errors the API layer itself raises --------------------------------------------------


class TaskNotFound(DomainError):
    code = "task_not_found"
    status = 404
    default_message = "No such task."


class ReceiptNotReady(DomainError):
    code = "receipt_not_ready"
    status = 404
    default_message = "The task has no receipt yet; receipts are issued when a task settles."


class NotAgentOwner(DomainError):
    code = "not_agent_owner"
    status = 403
    default_message = "Only the agent's owner may do this."


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    default_message = "Unable to log in with these credentials."


class InvalidIdempotencyKey(DomainError):
    code = "invalid_idempotency_key"
    default_message = "Idempotency-Key must be 1 to 100 printable ASCII characters, no spaces."


class RequestTooLarge(DomainError):
    code = "request_too_large"
    status = 413
    default_message = "The request body is too large."


# DRF exceptions → stable codes (checked in order: subclasses first).
DRF_CODES: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.ValidationError, "validation_error"),
    (exceptions.ParseError, "parse_error"),
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.AuthenticationFailed, "authentication_failed"),
    (exceptions.PermissionDenied, "permission_denied"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "throttled"),
]


def envelope(code: str, message: str, fields: dict | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


def _validation_fields(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return detail
    return {"non_field_errors": detail if isinstance(detail, list) else [detail]}


def _first_message(fields: dict[str, Any]) -> str:
    for name, value in fields.items():
        while isinstance(value, (list, dict)) and value:
            value = value[0] if isinstance(value, list) else next(iter(value.values()))
        if isinstance(value, str):
            return value if name == "non_field_errors" else f"{name}: {value}"
    return "Invalid input."


def _from_drf(exc: exceptions.APIException) -> tuple[str, str, dict[str, Any]]:
    code = next(
        (name for cls, name in DRF_CODES if isinstance(exc, cls)),
        str(exc.default_code),
    )
    if isinstance(exc, exceptions.ValidationError):
        fields = _validation_fields(exc.detail)
        return code, _first_message(fields), fields
    detail = exc.detail
    return code, str(detail) if not isinstance(detail, (list, dict)) else str(exc), {}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every failure becomes the error envelope."""
    from rest_framework.views import exception_handler, set_rollback

    headers: dict[str, str] = {}
    if isinstance(exc, (DomainError, EngineError)):
        status, code, message, fields = exc.status, exc.code, exc.message, exc.fields
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            headers["Retry-After"] = str(retry_after)
    elif isinstance(exc, DjangoValidationError):
        status, code = 400, "validation_error"
        fields = (
            exc.message_dict
            if hasattr(exc, "error_dict")
            else {"non_field_errors": list(exc.messages)}
        )
        message = _first_message(fields)
    elif isinstance(exc, RequestDataTooBig):
        status, code, message, fields = (
            413,
            RequestTooLarge.code,
            RequestTooLarge.default_message,
            {},
        )
    elif isinstance(exc, SuspiciousOperation):
        status, code, message, fields = 400, "bad_request", "The request was malformed.", {}
    elif isinstance(exc, IntegrityError):
        # Validation catches these first; a concurrent request can still win the race to
        # the unique index. The database kept its rules: report the conflict.
        log.warning("integrity error in %s: %s", context.get("view"), exc)
        status, code, message, fields = (
            409,
            "conflict",
            "A concurrent request changed the same thing; retry.",
            {},
        )
    elif isinstance(exc, (exceptions.APIException, Http404, DjangoPermissionDenied)):
        response = exception_handler(exc, context)
        assert response is not None
        drf_exc = (
            exceptions.NotFound()
            if isinstance(exc, Http404)
            else exceptions.PermissionDenied()
            if isinstance(exc, DjangoPermissionDenied)
            else exc
        )
        assert isinstance(drf_exc, exceptions.APIException)
        code, message, fields = _from_drf(drf_exc)
        response.data = envelope(code, message, fields)
        return response
    else:
        log.exception("unexpected error in %s", context.get("view"))
        status, code, message, fields = (
            500,
            "internal_error",
            "Something went wrong on our side.",
            {},
        )
    set_rollback()
    return Response(envelope(code, message, fields), status=status, headers=headers)


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Any path under the API that matches no endpoint: the envelope, not an HTML page."""
    message = f"No API endpoint at {request.path}."
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            message += f" Did you mean {request.path}/ (with the trailing slash)?"
    return JsonResponse(envelope("not_found", message), status=404)
