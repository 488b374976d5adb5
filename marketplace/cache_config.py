"""The cache every throttle counts in (`CACHES["default"]`): one for every process and host.

A rate limit counted per process would let each gunicorn worker, and each host, grant the
whole rate again (SPEC §18). Read by the settings, so it imports nothing that needs Django
set up.
"""

from __future__ import annotations

import hashlib
from typing import Any

from marketplace.env import env_int, env_str

# The database cache's table, which marketplace migration 0012 creates under this name.
CACHE_TABLE = "marketplace_cache"
# django-q2's sentinels save their cluster's status to a cache twice a second; in the shared
# database cache that would be a write per half second per cluster, for the q2 admin pages
# alone (the heartbeats are the record): each process keeps its own.
Q2_STATS = {"q2": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def cache_settings(*, redis_url: str | None, secret_key: str) -> dict[str, dict[str, Any]]:
    """Django's Redis cache on `redis_url` when there is one, else a table of the shared
    database. On a Redis that other deployments may share, the keys carry a prefix of this
    deployment's: CACHE_KEY_PREFIX, by default derived from the SECRET_KEY every host of a
    deployment shares (and no other deployment has)."""
    if redis_url:
        digest = hashlib.sha256(b"cache key prefix:" + secret_key.encode()).hexdigest()
        return {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": redis_url,
                "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", f"ax-{digest[:12]}"),
            },
            **Q2_STATS,
        }
    return {
        "default": {
            "BACKEND": "marketplace.cache_backend.DatabaseCache",
            "LOCATION": CACHE_TABLE,
            # Past this many rows, expired ones are deleted and then a third of the rest: live
            # counters must not be evicted by a flood of keys (Django's default is 300).
            "OPTIONS": {"MAX_ENTRIES": env_int("CACHE_MAX_ENTRIES", 50_000)},
        },
        **Q2_STATS,
    }
