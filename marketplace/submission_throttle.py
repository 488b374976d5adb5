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
    scope = "submissions"

    def get_rate(self) -> str:
        # Read per request, so that a changed setting applies (DRF reads its rates once).
        return settings.TASK_SUBMIT_RATE

    def allow_request(self, request: Any, view: Any) -> bool:
        if request.method != "POST":  # reading tasks is not submitting them
            return True
        return super().allow_request(request, view)


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
