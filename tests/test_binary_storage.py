"""Agent binaries in storage every host can read (SPEC §17): the database store, and a host
that has never seen a binary running it from there into its own module cache."""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile

from execution.engine import modules, sandbox
from marketplace.binaries import binary_read, binary_storage_name, binary_upload
from marketplace.models import StoredBinary
from marketplace.storage import DatabaseStorage, binary_storage
from marketplace.storage_config import binary_storage_backend
from tests import wasm_modules as wasm
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db

ECHO = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"


def use_host(settings, root: Path, store: str) -> None:
    """Make this process look like a machine of its own: its own data directory, upload
    directory and compiled-module cache, and an empty in-memory cache."""
    settings.DATA_DIR = root
    settings.MEDIA_ROOT = root / "media"
    settings.WASM_CACHE_DIR = root / "wasm-cache"
    settings.STORAGES = {**settings.STORAGES, "binaries": binary_storage_backend(store)}
    modules.reset()


def run(binary, text: bytes) -> sandbox.RunResult:
    return sandbox.run(
        sha256=binary.sha256,
        load=lambda: binary_read(binary),
        stdin=text,
        argv=["echo"],
        limits=sandbox.Limits.for_task(fuel=10**9, memory_mb=32, timeout_ms=5_000),
    )


def test_the_database_store_saves_reads_and_deletes_by_name():
    storage = DatabaseStorage()

    name = storage.save("wasm/ab/abc.wasm", ContentFile(b"\0asm first"))
    again = storage.save("wasm/ab/abc.wasm", ContentFile(b"\0asm second"))

    assert name == again == "wasm/ab/abc.wasm"  # a content address is never renamed
    assert storage.exists(name)
    assert storage.size(name) == len(b"\0asm second")
    with storage.open(name) as handle:
        assert handle.read() == b"\0asm second"
    assert storage.listdir("wasm") == (["ab"], [])
    storage.delete(name)
    assert not storage.exists(name)
    with pytest.raises(FileNotFoundError):
        storage.open(name)


def test_an_upload_lands_in_the_database_not_on_the_hosts_disk(settings, tmp_path):
    use_host(settings, tmp_path / "host-a", "database")
    data = ECHO.read_bytes()

    binary = binary_upload(agent=AgentFactory.create(slug="echo"), data=data)

    stored = StoredBinary.objects.get(name=binary.storage_name)
    assert binary.storage_name == binary_storage_name(hashlib.sha256(data).hexdigest())
    assert (bytes(stored.data), stored.size) == (data, len(data))
    assert not (tmp_path / "host-a" / "media").exists()


def test_a_host_that_never_saw_a_binary_fetches_checks_and_compiles_it(settings, tmp_path):
    use_host(settings, tmp_path / "host-a", "database")
    binary = binary_upload(agent=AgentFactory.create(slug="echo"), data=ECHO.read_bytes())
    assert run(binary, b"from a").stdout == b"from a"

    use_host(settings, tmp_path / "host-b", "database")
    before = modules.stats()
    result = run(binary, b"from b")

    assert result.stdout == b"from b"
    assert modules.stats().compiles == before.compiles + 1  # compiled here, not copied
    assert modules.artifact_path(binary.sha256).parent == tmp_path / "host-b" / "wasm-cache"
    assert modules.artifact_path(binary.sha256).exists()


def test_with_the_file_store_another_host_cannot_find_the_binary(settings, tmp_path):
    use_host(settings, tmp_path / "host-a", "file")
    binary = binary_upload(agent=AgentFactory.create(slug="echo"), data=ECHO.read_bytes())

    use_host(settings, tmp_path / "host-b", "file")
    with pytest.raises(FileNotFoundError):
        run(binary, b"lost")


def test_bytes_changed_in_the_store_are_refused_before_compiling(settings, tmp_path):
    use_host(settings, tmp_path / "host-a", "database")
    binary = binary_upload(agent=AgentFactory.create(slug="busy"), data=wasm.busy(3))
    StoredBinary.objects.filter(name=binary.storage_name).update(data=wasm.SPIN)

    use_host(settings, tmp_path / "host-b", "database")
    with pytest.raises(modules.ModuleLoadError, match="do not hash to"):
        modules.get(binary.sha256, lambda: binary_read(binary))
    assert modules.stats().compiles == 0


def test_a_damaged_stored_row_is_rewritten_by_the_next_upload(settings, tmp_path):
    use_host(settings, tmp_path / "host-a", "database")
    data = ECHO.read_bytes()
    name = binary_storage_name(hashlib.sha256(data).hexdigest())
    StoredBinary.objects.create(name=name, data=data[:10], size=10)

    binary = binary_upload(agent=AgentFactory.create(), data=data)

    assert binary_read(binary) == data
    assert StoredBinary.objects.get(name=name).size == len(data)


def test_the_migration_copies_binaries_from_disk_into_the_database(settings, tmp_path):
    use_host(settings, tmp_path / "host-a", "file")
    kept = binary_upload(agent=AgentFactory.create(slug="echo"), data=ECHO.read_bytes())
    missing = binary_upload(agent=AgentFactory.create(slug="busy"), data=wasm.busy(2))
    binary_storage().delete(missing.storage_name)

    settings.BINARY_STORAGE = "database"
    migration = importlib.import_module("marketplace.migrations.0010_binary_storage")
    migration.copy_files_into_the_database(apps, None)

    assert list(StoredBinary.objects.values_list("name", flat=True)) == [kept.storage_name]
    assert bytes(StoredBinary.objects.get().data) == ECHO.read_bytes()


def test_binary_storage_names_its_backend_and_refuses_others():
    assert binary_storage_backend("database") == {"BACKEND": "marketplace.storage.DatabaseStorage"}
    assert binary_storage_backend("s3")["BACKEND"] == "storages.backends.s3.S3Storage"
    with pytest.raises(ImproperlyConfigured, match="BINARY_STORAGE must be file, database or s3"):
        binary_storage_backend("ftp")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "file"),
        ({"DATABASE_URL": "postgresql://u@db.internal/x"}, "database"),
        ({"DATABASE_URL": "postgresql://u@db.internal/x", "BINARY_STORAGE": "s3"}, "s3"),
    ],
)
def test_binaries_go_to_the_database_by_default_once_it_is_postgresql(tmp_path, env, expected):
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BINARY_STORAGE")}
    shown = subprocess.run(
        [sys.executable, "-c", "from marketplace import settings as s; print(s.BINARY_STORAGE)"],
        cwd=Path(__file__).resolve().parent.parent,
        env={**base, **env, "DEBUG": "true", "DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.stdout.strip() == expected, shown.stderr
