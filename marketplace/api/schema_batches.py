"""The OpenAPI entry of `POST /api/v1/tasks/batch/` (the rest is in marketplace.api.schema)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiExample, inline_serializer

from marketplace.api.schema import IDEMPOTENCY_PARAMETER, WRITES, errors
from marketplace.api.serializers.tasks import TaskBatchSerializer, TaskSerializer

TASK_BATCH: dict[str, Any] = {
    "tags": ["tasks"],
    "summary": "Submit up to 100 tasks at once, all or nothing",
    "description": "Each task is checked as `POST /api/v1/tasks/` checks one, then all are "
    "held and queued in one transaction, or none is. A refusal that concerns one task names "
    "it: `fields.index` (from 0), and the message starts with `Task <index>:`. The key's "
    "limits count the batch's budgets exactly; the rate limit and the limit of tasks in "
    "flight count each task. One Idempotency-Key covers the whole batch.",
    "request": TaskBatchSerializer,
    "examples": [
        OpenApiExample(
            "Two echo tasks",
            value={
                "tasks": [
                    {"agent": "echo", "input": "hello", "budget": 100_000},
                    {"agent": "echo", "input": "world", "budget": 100_000},
                ]
            },
            request_only=True,
        )
    ],
    "parameters": [IDEMPOTENCY_PARAMETER],
    "responses": {
        201: inline_serializer("TaskBatch", {"tasks": TaskSerializer(many=True)}),
        **errors(*WRITES, 402, 409, 429),
    },
}
