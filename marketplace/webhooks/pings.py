"""How often an endpoint may be pinged (SPEC §23): `WEBHOOK_PING_RATE` (10 a minute) per
endpoint, counted in the shared cache (marketplace/cache_config.py), so the limit holds
across processes and hosts. Each ping is a signed POST to a URL of the user's choosing; with
no limit, anyone could make the platform send a stream of requests at any public host.
A refusal is 429 `throttled` with Retry-After (API), or a message on the endpoint's page.
"""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from escrow.errors import DomainError


class PingThrottled(DomainError):
    code = "throttled"
    status = 429
    default_message = "Too many pings to this endpoint; try again later."

    def __init__(self, message: str | None = None, *, retry_after: int) -> None:
        super().__init__(message)
        # Seconds until the next ping is allowed (the Retry-After header).
        self.retry_after = retry_after


class _PingThrottle(SimpleRateThrottle):
    scope = "webhook-pings"

    def __init__(self, endpoint_id: Any) -> None:
        self.endpoint_id = endpoint_id
        super().__init__()

    def get_rate(self) -> str:
        # Read per ping, so that a changed setting applies (DRF reads its rates once).
        return settings.WEBHOOK_PING_RATE

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": f"endpoint:{self.endpoint_id}"}


def ping_allow(*, endpoint_id: Any) -> None:
    """Count a ping to the endpoint, or raise PingThrottled when it has had its share."""
    throttle = _PingThrottle(endpoint_id)
    no_request: Any = None  # counted per endpoint, whoever asks, wherever
    if throttle.allow_request(no_request, no_request):
        return
    seconds = max(1, math.ceil(throttle.wait() or 0))
    raise PingThrottled(
        f"This endpoint has been pinged as often as allowed: at most "
        f"{_per(settings.WEBHOOK_PING_RATE)}. Try again in {seconds} second"
        f"{'s' if seconds != 1 else ''}.",
        retry_after=seconds,
    )


def _per(rate: str) -> str:
    """A rate such as 10/minute, in words: 10 pings a minute."""
    count, _, period = rate.partition("/")
    unit = {"s": "second", "m": "minute", "h": "hour", "d": "day"}.get(period[:1], period)
    return f"{count} ping{'s' if count != '1' else ''} a {unit}"
