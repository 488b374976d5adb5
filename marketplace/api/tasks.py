"""Tasks: submit (idempotent), list, read and cancel. A task is its requester's alone;
anybody else gets 404 `task_not_found`, as for an id that never existed. An API key limited
to some agents lists only their tasks, and gets 403 `agent_not_allowed` for the others."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view, throttle_classes
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from marketplace import selectors
from marketplace.api import schema, schema_batches
from marketplace.api.auth_keys import agent_allowlist, api_key_of, key_scope
from marketplace.api.common import current_user, page_response, valid
from marketplace.api.serializers.tasks import (
    TaskListSerializer,
    TaskQuerySerializer,
    TaskSerializer,
)
from marketplace.api.submission import batch_items, submission_data, task_body
from marketplace.batches import tasks_submit
from marketplace.exceptions import TaskNotFound
from marketplace.idempotency import idempotent
from marketplace.services import task_cancel, task_submit
from marketplace.submission_throttle import (
    BatchKeyThrottle,
    BatchUserThrottle,
    SubmissionKeyThrottle,
    SubmissionUserThrottle,
)
from marketplace.task_wait import MAX_SECONDS, WaitersFull, task_wait

WAIT_PREFERENCE = re.compile(r'\s*wait\s*=\s*"?(-?\d{1,12})"?\s*', re.IGNORECASE)


def wait_preference(request: Request) -> int | None:
    """`Prefer: wait=N` (RFC 7240): N clamped to 1..MAX_SECONDS; None without it. Other
    preferences, and a wait that is not a whole number, are ignored."""
    for preference in request.headers.get("Prefer", "").split(","):
        found = WAIT_PREFERENCE.fullmatch(preference.split(";")[0])
        if found:
            return min(max(int(found.group(1)), 1), MAX_SECONDS)
    return None


@extend_schema(**schema.TASKS_LIST)
@extend_schema(**schema.TASK_SUBMIT)
@key_scope(GET="tasks:read", POST="tasks:write")
@api_view(["GET", "POST"])
@throttle_classes([SubmissionUserThrottle, SubmissionKeyThrottle])
def tasks(request: Request) -> Response:
    user = current_user(request)
    if request.method == "POST":
        wait = wait_preference(request)

        def run(key: str | None) -> Response:
            data = submission_data(request.data, requester=user)
            if "channel" in data:
                data["channel"] = str(data["channel"])
            submitted = task_submit(
                requester=user, idempotency_key=key, api_key=api_key_of(request), **data
            )
            # The task in hand (with its agent and escrow) is what the response shows.
            if wait is None:
                return Response(task_body(submitted), status=201)
            try:
                # Inside the idempotent call: what is remembered is what is sent.
                waited = task_wait(submitted.pk, wait)
            except WaitersFull:
                # This process holds as many waiting requests as it may: answer at once.
                return Response(task_body(submitted), status=202)
            return Response(
                task_body(waited),
                status=201 if waited.is_final else 202,
                headers={"Preference-Applied": f"wait={wait}"},
            )

        return idempotent(request, user, run)
    query = valid(TaskQuerySerializer, request.query_params)
    listing = selectors.tasks_of(
        user,
        with_escrow=True,
        status=query.get("status"),
        agent_slug=query.get("agent"),
        allowlist=agent_allowlist(request),
    ).order_by(*TaskQuerySerializer.ORDERINGS[query["ordering"]])
    return page_response(request, listing, TaskListSerializer)


@extend_schema(**schema_batches.TASK_BATCH)
@key_scope(POST="tasks:write")
@api_view(["POST"])
@throttle_classes([BatchUserThrottle, BatchKeyThrottle])
def task_batch(request: Request) -> Response:
    """Up to MAX_BATCH tasks, all or nothing (marketplace.batches)."""
    user = current_user(request)

    def run(key: str | None) -> Response:
        items = batch_items(request.data)
        agents: dict[str, Any] = {}  # each agent of the batch read once
        submissions = []
        for index, item in enumerate(items):
            try:
                submissions.append(submission_data(item, requester=user, agents=agents))
            except ValidationError as exc:
                detail = exc.detail if isinstance(exc.detail, dict) else {"errors": exc.detail}
                named: dict[str, Any] = {"index": index, **detail}  # a number, not text
                exc.detail = named
                raise
        submitted = tasks_submit(
            requester=user,
            submissions=submissions,
            idempotency_key=key,
            api_key=api_key_of(request),
        )
        return Response({"tasks": [task_body(task) for task in submitted]}, status=201)

    return idempotent(request, user, run)


@extend_schema(**schema.TASK)
@key_scope(GET="tasks:read")
@api_view(["GET"])
def task(request: Request, task_id: Any) -> Response:
    found = selectors.task_of(
        current_user(request), task_id, missing=TaskNotFound, allowlist=agent_allowlist(request)
    )
    return Response(TaskSerializer(found).data)


@extend_schema(**schema.TASK_CANCEL)
@key_scope(POST="tasks:write")
@api_view(["POST"])
def task_cancel_view(request: Request, task_id: Any) -> Response:
    user = current_user(request)
    allowlist = agent_allowlist(request)
    cancelled = task_cancel(
        task=selectors.task_of(user, task_id, missing=TaskNotFound, allowlist=allowlist)
    )
    # Read back: the refund and the escrow's new status are what the caller wants to see.
    found = selectors.task_of(user, cancelled.pk, missing=TaskNotFound)
    return Response(TaskSerializer(found).data)
