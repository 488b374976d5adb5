"""Reading configuration from the environment.

Small helpers that fail loudly on a malformed value instead of silently falling back to a
default, and the DATABASE_URL parser.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def env_optional(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value == "" else value


def env_str(name: str, default: str) -> str:
    value = env_optional(name)
    return default if value is None else value


def env_int(name: str, default: int) -> int:
    raw = env_optional(name)
    if raw is None:
        return default
    try:
        return int(raw.replace("_", ""))
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None


def env_bool(name: str, default: bool) -> bool:
    raw = env_optional(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), got {raw!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_optional(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """`postgresql://user:pass@host:port/name?sslmode=…` → a Django DATABASES entry."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must start with postgresql://, got scheme {parts.scheme!r}"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured("DATABASE_URL has no database name")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    # A socket directory can be given as ?host=/path (libpq style).
    host = query.pop("host", None) or unquote(parts.hostname or "")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": env_bool("DB_CONN_HEALTH_CHECKS", True),
        # Server-side binding lets psycopg prepare a statement a connection has run
        # DB_PREPARE_THRESHOLD times (benchmarks/statements.py); off behind a pooler that
        # cannot keep prepared statements (PgBouncer in transaction mode before 1.21).
        "OPTIONS": (
            {"server_side_binding": True, "prepare_threshold": env_int("DB_PREPARE_THRESHOLD", 5)}
            if env_bool("DB_SERVER_SIDE_BINDING", True)
            else {}
        )
        | query,
    }
