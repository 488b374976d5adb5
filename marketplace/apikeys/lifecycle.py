"""API keys: create, check, change and revoke them.

A key is `axk_<8 characters>_<43 characters>`: 32 random bytes behind a visible prefix.
Only the SHA-256 of the whole key is stored; a presented key is found by its prefix (a
unique index) and compared in constant time. A password hasher's deliberate slowness buys
nothing for a 256-bit random secret and would cost every request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from escrow.errors import DomainError
from marketplace.apikey_models import ApiKey
from marketplace.errors import AgentNotAllowed, ApiKeyRevoked, TooManyApiKeys
from marketplace.models import Agent
from marketplace.selectors.access import AgentAllowlist

KEY_START = "axk_"
PREFIX_ALPHABET = string.ascii_lowercase + string.digits
PREFIX_LENGTH = len(KEY_START) + 8  # what is shown: "axk_" and 8 random characters
KEY_LENGTH = PREFIX_LENGTH + 1 + 43  # "_" and 32 bytes of URL-safe base64
SCOPES = tuple(ApiKey.Scope.values)
# When the key is used again within this long, last_used_at is not rewritten.
TOUCH_EVERY = timedelta(seconds=60)


class InvalidKeySettings(DomainError):
    code = "validation_error"
    default_message = "Invalid API key settings."


class KeyRefused(DomainError):
    """A presented key that does not authenticate: unknown, revoked or expired."""

    code = "authentication_failed"
    status = 401
    default_message = "Invalid API key."


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _checked(
    *,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    limits: dict[str, int | None] | None = None,
    agents: list[Agent] | None = None,
    expires_at: datetime | None = None,
) -> dict[str, Any]:
    """The fields to write, each checked; None means "not given"."""
    fields: dict[str, Any] = {}
    if name is not None:
        if not name.strip() or len(name) > 100:
            raise InvalidKeySettings(
                "A key needs a name of 1 to 100 characters.",
                fields={"name": ["1 to 100 characters"]},
            )
        fields["name"] = name.strip()
    if scopes is not None:
        chosen = set(scopes)
        unknown = chosen - set(SCOPES)
        if unknown or not chosen:
            raise InvalidKeySettings(
                f"Choose at least one scope of: {', '.join(SCOPES)}.",
                fields={
                    "scopes": [
                        f"unknown: {', '.join(sorted(unknown))}" if unknown else "at least one"
                    ]
                },
            )
        fields["scopes"] = [scope for scope in SCOPES if scope in chosen]
    for limit, value in (limits or {}).items():
        if limit not in ApiKey.LIMITS:
            raise InvalidKeySettings(f"No such limit {limit!r}.", fields={"limits": [limit]})
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise InvalidKeySettings(
                f"The {limit} limit is a positive number of µCR, or null for none.",
                fields={"limits": {limit: ["positive integer or null"]}},
            )
        fields[f"{limit}_limit"] = value
    if agents is not None and not agents:
        raise InvalidKeySettings(
            "List at least one agent, or leave `agents` out (null) to allow any agent.",
            fields={"agents": ["at least one, or null for any"]},
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidKeySettings(
            "expires_at must be in the future.", fields={"expires_at": ["in the future"]}
        )
    return fields


def _new_secret() -> tuple[str, str]:
    prefix = KEY_START + "".join(secrets.choice(PREFIX_ALPHABET) for _ in range(8))
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


def api_key_create(
    *,
    user: User,
    name: str,
    scopes: Iterable[str],
    limits: dict[str, int | None] | None = None,
    agents: list[Agent] | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret, which is never shown again (only its hash is kept)."""
    fields = _checked(name=name, scopes=scopes, limits=limits, agents=agents, expires_at=expires_at)
    if expires_at is not None:
        fields["expires_at"] = expires_at
    # Counted without a lock: two concurrent creations may pass one over the limit, which
    # only bounds clutter; nothing else depends on it.
    live = ApiKey.objects.filter(user=user, revoked_at__isnull=True).count()
    if live >= settings.API_KEYS_MAX_PER_USER:
        raise TooManyApiKeys(fields={"max": settings.API_KEYS_MAX_PER_USER})
    for _ in range(3):
        prefix, raw = _new_secret()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    user=user, prefix=prefix, secret_sha256=_digest(raw), **fields
                )
                key.agents.set(agents or [])
            return key, raw
        except IntegrityError:  # a prefix collision (1 in 36**8): draw again
            continue
    raise RuntimeError("could not draw a unique API key prefix")


UNSET: Any = object()


def api_key_update(
    *,
    key: ApiKey,
    name: str | None = None,
    scopes: Iterable[str] | None = None,
    limits: dict[str, int | None] | None = None,
    agents: list[Agent] | None = UNSET,
    expires_at: datetime | None = UNSET,
) -> ApiKey:
    """Change what a live key may do. `limits` merges (null removes a limit); `agents=None`
    allows any agent again; `expires_at=None` makes it never expire. Counters are kept."""
    fields = _checked(
        name=name,
        scopes=scopes,
        limits=limits,
        agents=None if agents is UNSET else agents,
        expires_at=None if expires_at is UNSET else expires_at,
    )
    if expires_at is not UNSET:
        fields["expires_at"] = expires_at
    with transaction.atomic():
        # Only the fields changed are written: the counters belong to the submissions.
        live = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True)
        won = live.update(**fields) if fields else live.exists()
        if not won:
            raise ApiKeyRevoked()
        if agents is not UNSET:
            key.agents.set(agents or [])
    key.refresh_from_db()
    return key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke at once: the next request with the key gets 401. Revoking twice is a no-op."""
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key


def api_key_find(raw: str) -> ApiKey:
    """The live key `raw` is. Raises KeyRefused for an unknown, revoked or expired key."""
    if len(raw) != KEY_LENGTH or not raw.startswith(KEY_START):
        raise KeyRefused("Invalid API key.")
    key = ApiKey.objects.select_related("user").filter(prefix=raw[:PREFIX_LENGTH]).first()
    if key is None or not hmac.compare_digest(key.secret_sha256, _digest(raw)):
        raise KeyRefused("Invalid API key.")
    if key.revoked_at is not None:
        raise KeyRefused("This API key has been revoked.")
    if key.expires_at is not None and key.expires_at <= timezone.now():
        raise KeyRefused("This API key has expired.")
    if not key.user.is_active:
        raise KeyRefused("Invalid API key.")
    return key


def api_key_touch(key: ApiKey) -> None:
    """Record use, at most once a minute (one conditional UPDATE, outside any transaction)."""
    now = timezone.now()
    if key.last_used_at is None or key.last_used_at < now - TOUCH_EVERY:
        ApiKey.objects.filter(pk=key.pk).exclude(last_used_at__gte=now - TOUCH_EVERY).update(
            last_used_at=now
        )


def api_key_allowlist(key: ApiKey) -> AgentAllowlist | None:
    """The agents the key is limited to, or None when it may use any. The refusal (403
    `agent_not_allowed`) names the agents it may use."""
    agents = sorted(key.agents.values_list("slug", "pk"))
    if not agents:
        return None
    slugs = [slug for slug, _ in agents]

    def refuse() -> AgentNotAllowed:
        return AgentNotAllowed("This API key may not use this agent.", fields={"agents": slugs})

    return AgentAllowlist(
        ids=frozenset(pk for _, pk in agents), slugs=frozenset(slugs), refuse=refuse
    )


def api_key_check_agent(key: ApiKey, agent_id: int) -> None:
    allowlist = api_key_allowlist(key)
    if allowlist is not None:
        allowlist.check(agent_id=agent_id)
