"""The database cache every throttle counts in, when there is no Redis (marketplace.cache_config).

Django's `DatabaseCache.set` takes five round trips: it counts the table's rows (to cull past
MAX_ENTRIES), then in a transaction reads the key and updates or inserts it. A throttle sets
its key on every request it counts — every submission — so here, on PostgreSQL outside a
transaction, `set` is one upsert, and the count (and the cull) runs on one set in CULL_EVERY
of each process: the table may pass MAX_ENTRIES by as many rows as processes × CULL_EVERY
before it is culled, as Django's own cull would then cull it.
"""

from __future__ import annotations

import base64
import itertools
import pickle
from datetime import UTC, datetime
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.db import DatabaseCache as DjangoDatabaseCache
from django.db import DatabaseError, connections, router
from django.utils.timezone import now as tz_now

CULL_EVERY = 50


class DatabaseCache(DjangoDatabaseCache):
    def __init__(self, table: str, params: dict[str, Any]) -> None:
        super().__init__(table, params)
        self._sets = itertools.count(1)

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        db = router.db_for_write(self.cache_model_class)
        connection = connections[db]
        if connection.vendor != "postgresql" or connection.in_atomic_block:
            super().set(key, value, timeout, version)
            return
        key = self.make_and_validate_key(key, version=version)
        timeout = self.get_backend_timeout(timeout)
        expires = datetime.max if timeout is None else datetime.fromtimestamp(timeout, tz=UTC)
        encoded = base64.b64encode(pickle.dumps(value, self.pickle_protocol)).decode("latin1")
        table = connection.ops.quote_name(self._table)  # type: ignore[attr-defined]
        try:
            with connection.cursor() as cursor:
                if next(self._sets) % CULL_EVERY == 0:
                    cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608
                    count = cursor.fetchone()[0]
                    if count > self._max_entries:
                        now = tz_now().replace(microsecond=0)
                        self._cull(db, cursor, now, count)  # type: ignore[attr-defined]
                cursor.execute(
                    f"INSERT INTO {table} (cache_key, value, expires) VALUES (%s, %s, %s) "  # noqa: S608
                    "ON CONFLICT (cache_key) DO UPDATE "
                    "SET value = EXCLUDED.value, expires = EXCLUDED.expires",
                    [
                        key,
                        encoded,
                        connection.ops.adapt_datetimefield_value(expires.replace(microsecond=0)),
                    ],
                )
        except DatabaseError:
            pass  # as Django's: a cache write may fail silently
