"""Where agent binaries live: storage every host of a deployment can read.

`BINARY_STORAGE` picks the backend of `storages["binaries"]`: `file` (MEDIA_ROOT, the
embedded default: one machine), `database` (the `StoredBinary` table, the default with
PostgreSQL: every host already reaches the database) or `s3` (django-storages, configured by
the AWS_* environment). A host that has never seen a binary reads it from there; the engine
checks its SHA-256 before compiling it into that host's own module cache.
"""

from __future__ import annotations

from typing import Any

from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage, storages
from django.utils.deconstruct import deconstructible

from marketplace.models import StoredBinary


def binary_storage() -> Storage:
    return storages["binaries"]


@deconstructible(path="marketplace.storage.DatabaseStorage")
class DatabaseStorage(Storage):
    """Files as rows of `StoredBinary`, by name. Names are content addresses, so saving a name
    that exists replaces its bytes (the caller rewrites a damaged copy) instead of inventing
    another name."""

    def _open(self, name: str, mode: str = "rb") -> File:
        if "w" in mode or "a" in mode or "+" in mode:
            raise ValueError("DatabaseStorage files are read-only once saved; save() a new one")
        row = StoredBinary.objects.filter(name=name).values_list("data", flat=True).first()
        if row is None:
            raise FileNotFoundError(f"no stored binary named {name!r}")
        return ContentFile(bytes(row), name=name)

    def _save(self, name: str, content: Any) -> str:
        content.seek(0)
        data = content.read()
        if isinstance(data, str):
            data = data.encode()
        # Two hosts saving one content address at once write the same bytes; the loser of
        # the insert race updates instead (update_or_create retries after IntegrityError).
        StoredBinary.objects.update_or_create(name=name, defaults={"data": data, "size": len(data)})
        return name

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return name

    def exists(self, name: str) -> bool:
        return StoredBinary.objects.filter(name=name).exists()

    def delete(self, name: str) -> None:
        StoredBinary.objects.filter(name=name).delete()

    def size(self, name: str) -> int:
        size = StoredBinary.objects.filter(name=name).values_list("size", flat=True).first()
        if size is None:
            raise FileNotFoundError(f"no stored binary named {name!r}")
        return size

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        prefix = path.rstrip("/") + "/" if path else ""
        names = StoredBinary.objects.filter(name__startswith=prefix).values_list("name", flat=True)
        dirs, files = set(), []
        for name in names:
            rest = name[len(prefix) :]
            if "/" in rest:
                dirs.add(rest.split("/", 1)[0])
            else:
                files.append(rest)
        return sorted(dirs), sorted(files)

    def url(self, name: str | None) -> str:
        raise NotImplementedError("binaries are not served by URL")
