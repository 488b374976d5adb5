"""How fast a requester may submit tasks (SPEC §23): `TASK_SUBMIT_RATE` per user, and the same
per API key, counted in the shared cache (marketplace/cache_config.py) so that the limit holds
across processes and hosts. The API applies the throttles to `POST /api/v1/tasks/`; the task
form asks `submission_refusal`. A refusal is 429 with Retry-After (API) or a message on the
form that says when to try again."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from marketplace.apikey_models import ApiKey


class _SubmissionThrottle(SimpleRateThrottle):
    """Counts tasks, not requests: a batch counts each of its tasks. The history keeps one
    entry per request: its time, or [time, tasks] for a request of more than one task."""

    scope = "submissions"
    duration: int
    num_requests: int

    def get_rate(self) -> str:
        # Read per request, so that a changed setting applies (DRF reads its rates once).
        return settings.TASK_SUBMIT_RATE

    def tasks_of(self, request: Any) -> int:
        return 1

    def allow_request(self, request: Any, view: Any) -> bool:
        if request.method != "POST":  # reading tasks is not submitting them
            return True
        self.key = self.get_cache_key(request, view)
        if self.rate is None or self.key is None:
            return True
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and _time(self.history[-1]) <= self.now - self.duration:
            self.history.pop()
        tasks = self.tasks_of(request)
        if _count(self.history) + tasks > self.num_requests:
            return self.throttle_failure()
        self.history.insert(0, self.now if tasks == 1 else [self.now, tasks])
        self.cache.set(self.key, self.history, self.duration)
        return True

    def wait(self) -> float | None:
        # DRF's own estimate, with the history's tasks counted.
        remaining: float = self.duration
        if self.history:
            remaining = self.duration - (self.now - _time(self.history[-1]))
        available = self.num_requests - _count(self.history) + 1
        return None if available <= 0 else remaining / float(available)


def _time(entry: Any) -> float:
    return entry[0] if isinstance(entry, list) else entry


def _count(history: list[Any]) -> int:
    return sum(entry[1] if isinstance(entry, list) else 1 for entry in history)


class SubmissionUserThrottle(_SubmissionThrottle):
    """Every submission of a user, whatever it came with (session, token or API key)."""

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": f"user:{user.pk}"}


class SubmissionKeyThrottle(_SubmissionThrottle):
    """Every submission made with one API key."""

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        key = getattr(request, "auth", None)
        if not isinstance(key, ApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": f"key:{key.pk}"}


def submission_refusal(request: Any) -> str | None:
    """Why the task form's user may not submit now, or None when they may (the submission
    is then counted)."""
    throttle = SubmissionUserThrottle()
    no_view: Any = None  # a user's rate does not depend on the view
    if throttle.allow_request(request, no_view):
        return None
    seconds = max(1, math.ceil(throttle.wait() or 0))
    return (
        f"You have submitted as many tasks as allowed for now ({settings.TASK_SUBMIT_RATE}). "
        f"Try again in {seconds} second{'s' if seconds != 1 else ''}."
    )


def _batch_size(request: Any) -> int:
    # A body that is not a batch is refused by the view; here it counts as one task.
    tasks = request.data.get("tasks") if isinstance(request.data, dict) else None
    return len(tasks) if isinstance(tasks, list) and tasks else 1


class BatchUserThrottle(SubmissionUserThrottle):
    """A user's batches, each task counted against the same rate as single submissions."""

    def tasks_of(self, request: Any) -> int:
        return _batch_size(request)


class BatchKeyThrottle(SubmissionKeyThrottle):
    """A key's batches, each task counted against the same rate as single submissions."""

    def tasks_of(self, request: Any) -> int:
        return _batch_size(request)
