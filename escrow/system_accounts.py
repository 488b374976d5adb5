"""System accounts, split into shards.

Each system account (escrow, channels, platform fees, external, earnings, payouts) is
SYSTEM_ACCOUNT_SHARDS rows of one kind, so that no row is written by every settlement.
An object picks its shard by a stable function of its id (`shard_for`); escrows and
channels store the one they picked, so raising the setting later never splits their
money. What a system account holds is the sum of its shards (`system_balance`).
"""

from __future__ import annotations

import uuid
import zlib

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import Sum

from escrow.models import Account


def shard_for(key: object) -> int:
    """The shard of the system accounts an object uses: a stable function of its id (a
    task, escrow, channel, withdrawal or deposit id), known before any transaction."""
    if isinstance(key, uuid.UUID):
        value = key.int
    elif isinstance(key, int) and not isinstance(key, bool):
        value = key
    else:
        value = zlib.crc32(str(key).encode())
    return value % settings.SYSTEM_ACCOUNT_SHARDS


_system_ids: dict[tuple[str, int], int] = {}


def system_account_id(kind: str, shard: int) -> int:
    """The id of one shard of a system account, cached per process.

    The shards are created by a migration (and by `system_accounts_ensure`). A shard beyond
    those (SYSTEM_ACCOUNT_SHARDS raised since) is created on first use; one created inside
    a caller's transaction is not cached, since that transaction may still roll back.
    """
    if (kind, shard) not in _system_ids:
        if kind not in Account.SYSTEM_KINDS:
            raise ImproperlyConfigured(f"{kind!r} is not a system account kind.")
        if not _system_ids:  # the first call of the process reads every shard at once
            system = Account.objects.filter(user=None).exclude(kind=Account.Kind.WALLET)
            for system_kind, system_shard, system_pk in system.values_list("kind", "shard", "pk"):
                _system_ids[(system_kind, system_shard)] = system_pk
            if (kind, shard) in _system_ids:
                return _system_ids[(kind, shard)]
        found = Account.objects.filter(kind=kind, shard=shard, user=None).values_list(
            "pk", flat=True
        )
        pk = found.first()
        if pk is None:
            Account.objects.bulk_create([Account(kind=kind, shard=shard)], ignore_conflicts=True)
            pk = found.get()
            if connection.in_atomic_block:
                return pk
        _system_ids[(kind, shard)] = pk
    return _system_ids[(kind, shard)]


def system_accounts_ensure(shards: int | None = None) -> None:
    """Create any missing system account shard (for databases emptied outside migrations,
    or after SYSTEM_ACCOUNT_SHARDS was raised)."""
    count = shards or settings.SYSTEM_ACCOUNT_SHARDS
    Account.objects.bulk_create(
        [
            Account(kind=kind, shard=shard)
            for kind in Account.SYSTEM_KINDS
            for shard in range(count)
        ],
        ignore_conflicts=True,
    )
    _system_ids.clear()


def system_balance(kind: str) -> int:
    """What a system account holds: the sum of its shards."""
    total = Account.objects.filter(kind=kind, user=None).aggregate(total=Sum("balance"))["total"]
    return total or 0
