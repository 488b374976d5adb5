"""Reads of API keys. A key is its user's alone; anybody else is told it does not exist."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from marketplace.apikey_models import ApiKey, ApiKeyCharge
from marketplace.selectors.access import Refusal, page_not_found

NO_SUCH_API_KEY = page_not_found("No such API key.")


def api_keys_of(user: Any) -> QuerySet[ApiKey]:
    """The user's keys, live and revoked, newest first, with their allowed agents."""
    return (
        ApiKey.objects.filter(user=user).prefetch_related("agents").order_by("-created_at", "-pk")
    )


def api_key_for(user: Any, key_id: Any, *, missing: Refusal = NO_SUCH_API_KEY) -> ApiKey:
    try:
        pk = int(key_id)
    except (TypeError, ValueError):
        raise missing() from None
    key = api_keys_of(user).filter(pk=pk).first()
    if key is None:
        raise missing()
    return key


def api_key_charges(key: ApiKey, *, limit: int = 20) -> list[ApiKeyCharge]:
    """What the key spent on lately: its tasks and channels, newest first."""
    return list(
        ApiKeyCharge.objects.filter(key=key)
        .select_related("task__agent", "channel__agent")
        .order_by("-created_at", "-pk")[:limit]
    )
