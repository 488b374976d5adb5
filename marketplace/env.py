"""Reading configuration from the environment.

Small helpers that fail loudly on a malformed value instead of silently falling back to a
default, the development environment file that `make run` writes, and the DATABASE_URL
parser.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

# What the development environment file gives the helpers below, for the variables the
# process's own environment leaves unset (see `development_env_use`).
_development: dict[str, str] = {}

_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")


def env_optional(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        value = _development.get(name)
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


def development_env_read(path: Path) -> dict[str, str]:
    """The variables of an environment file: `NAME=value` lines (optionally `export`ed, the
    value optionally quoted), blank lines and `#` comments."""
    variables: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise ImproperlyConfigured(f"{path}, line {number}: expected NAME=value, got {line!r}")
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        variables[name] = value
    return variables


def development_env_use(path: Path) -> bool:
    """Read the development environment file `make run` writes (DEBUG=true and the rest of its
    development settings) when it exists, so that every `manage.py` command run later in the
    same checkout runs as the server does. The process's own environment wins, variable by
    variable; a process whose environment sets DEBUG itself (production saying DEBUG=false,
    the test suite, the benchmarks) was configured by its caller and reads no file at all.
    DATA_DIR, which locates the file, is never taken from it. True when the file was read."""
    _development.clear()
    if "DEBUG" in os.environ or not path.is_file():
        return False
    _development.update(development_env_read(path))
    _development.pop("DATA_DIR", None)
    return True


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
