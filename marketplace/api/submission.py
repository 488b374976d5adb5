"""The submission's wire format without building a serializer per request.

DRF builds a serializer's fields for every instance: deep copies of the declared fields,
and for a ModelSerializer its fields from the model again (1.6 ms of a 15 ms submission).
Here one `TaskSubmitSerializer` and one `TaskSerializer` are built per process, and each
request uses their fields: the same checks, messages and output, field by field.

`submission_data` checks a body with those fields and the serializer's own `validate_*`
methods; anything they refuse is checked again by a whole serializer, which names every
fault (400 `validation_error`) exactly as before. `task_body` is `TaskSerializer(task).data`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers
from rest_framework.fields import empty

from marketplace.api.common import valid
from marketplace.api.serializers.tasks import (
    TaskBatchSerializer,
    TaskSerializer,
    TaskSubmitSerializer,
)
from marketplace.models import Task
from marketplace.submissions import MAX_BATCH


@cache
def _submit_fields() -> dict[str, serializers.Field]:
    # Bound once to a serializer without context; a field keeps no state of a request.
    return {
        name: field for name, field in TaskSubmitSerializer().fields.items() if not field.read_only
    }


@cache
def _task_serializer() -> TaskSerializer:
    return TaskSerializer()


class _Checks:
    """What the serializer's `validate_<field>` and `validate` methods read of it."""

    def __init__(self, context: dict[str, Any]) -> None:
        self.context = context


def submission_data(
    data: Any, *, requester: User, agents: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The submission's validated data, as `TaskSubmitSerializer` gives it. `agents`, the
    agents read so far by slug, lets a batch read each of its agents once."""
    context: dict[str, Any] = {"requester": requester}
    if agents is not None:
        context["agents"] = agents
    quick = _checked(data, context)
    if quick is not None:
        return quick
    return valid(TaskSubmitSerializer, data, context=context)


def batch_items(data: Any) -> list[Any]:
    """The tasks of a batch's body (`{"tasks": [...]}`, 1 to MAX_BATCH of them); each is
    checked on its own afterwards."""
    tasks = data.get("tasks") if type(data) is dict else None
    if type(tasks) is list and 1 <= len(tasks) <= MAX_BATCH:
        return tasks
    valid(TaskBatchSerializer, data)  # says what is wrong with the body
    raise AssertionError("a body the checks above refuse is refused by the serializer")


def _checked(data: Any, context: dict[str, Any]) -> dict[str, Any] | None:
    """What the serializer would validate `data` to; None when any field refuses it."""
    if type(data) is not dict:  # a JSON object: form data goes through the serializer
        return None
    checks = _Checks(context)
    attrs: dict[str, Any] = {}
    try:
        for name, field in _submit_fields().items():
            if name in data:
                value = field.run_validation(data[name])
            elif field.required:
                return None
            elif field.default is not empty:
                value = field.get_default()
            else:
                continue
            method = getattr(TaskSubmitSerializer, f"validate_{name}", None)
            attrs[name] = value if method is None else method(checks, value)
        return TaskSubmitSerializer.validate(checks, attrs)  # type: ignore[arg-type]
    except (serializers.ValidationError, DjangoValidationError):
        return None


def task_body(task: Task) -> dict[str, Any]:
    """`TaskSerializer(task).data`, with the fields built once per process. A task just
    submitted carries the escrow it opened (`opened_escrow`), so nothing is read back."""
    return _task_serializer().to_representation(task)
