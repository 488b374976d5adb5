"""The binary store: validated uploads, content-addressed storage, versions per agent."""

from __future__ import annotations

from pathlib import Path

import pytest

from execution.engine.validation import WasmNoStart, WasmTooLarge
from marketplace.binaries import binary_read, binary_storage_name, binary_upload
from marketplace.models import AgentBinary
from marketplace.storage import binary_storage
from marketplace.storage_config import binary_storage_backend
from tests.factories import AgentFactory

from .conftest import sha256, wasm

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    # The file store (the embedded default); tests/test_binary_storage.py has the database's.
    settings.STORAGES = {**settings.STORAGES, "binaries": binary_storage_backend("file")}
    return settings.MEDIA_ROOT


def stored_files(media_root: Path) -> list[str]:
    return sorted(str(p.relative_to(media_root)) for p in media_root.rglob("*") if p.is_file())


def test_first_upload_is_version_one_stored_by_content(media_root):
    agent = AgentFactory.create(slug="echo")
    data = wasm("echo")

    binary = binary_upload(agent=agent, data=data)

    digest = sha256(data)
    assert (binary.version, binary.sha256, binary.size) == (1, digest, len(data))
    assert binary.storage_name == f"wasm/{digest[:2]}/{digest}.wasm"
    assert stored_files(media_root) == [binary.storage_name]
    assert binary_read(binary) == data
    agent.refresh_from_db()
    assert agent.current_binary == binary


def test_a_new_binary_becomes_the_next_version_and_the_current_one():
    agent = AgentFactory.create()
    first = binary_upload(agent=agent, data=wasm("echo"))

    second = binary_upload(agent=agent, data=wasm("trivial"))

    assert (first.version, second.version) == (1, 2)
    agent.refresh_from_db()
    assert agent.current_binary == second
    assert binary_read(first) == wasm("echo")  # old versions stay runnable for pinned tasks


def test_uploading_the_current_binary_again_changes_nothing(media_root):
    agent = AgentFactory.create()
    first = binary_upload(agent=agent, data=wasm("echo"))

    again = binary_upload(agent=agent, data=wasm("echo"))

    assert again == first
    assert AgentBinary.objects.filter(agent=agent).count() == 1
    assert len(stored_files(media_root)) == 1


def test_uploading_an_older_version_again_rolls_back_as_a_new_version(media_root):
    agent = AgentFactory.create()
    first = binary_upload(agent=agent, data=wasm("echo"))
    binary_upload(agent=agent, data=wasm("trivial"))

    rollback = binary_upload(agent=agent, data=wasm("echo"))

    assert rollback.version == 3
    assert rollback.storage_name == first.storage_name
    assert len(stored_files(media_root)) == 2
    agent.refresh_from_db()
    assert agent.current_binary == rollback


def test_the_same_bytes_from_two_agents_are_stored_once(media_root):
    alice_agent = AgentFactory.create()
    bob_agent = AgentFactory.create()

    alices = binary_upload(agent=alice_agent, data=wasm("echo"))
    path = media_root / alices.storage_name
    written_at = path.stat().st_mtime_ns
    bobs = binary_upload(agent=bob_agent, data=wasm("echo"))

    assert (alices.version, bobs.version) == (1, 1)
    assert alices.storage_name == bobs.storage_name
    assert stored_files(media_root) == [alices.storage_name]
    assert path.stat().st_mtime_ns == written_at  # not rewritten


def test_a_damaged_stored_file_is_replaced_on_the_next_upload(media_root):
    data = wasm("echo")
    name = binary_storage_name(sha256(data))
    (media_root / name).parent.mkdir(parents=True)
    (media_root / name).write_bytes(data[:10])  # a save cut short

    binary = binary_upload(agent=AgentFactory.create(), data=data)

    assert binary.storage_name == name
    assert binary_read(binary) == data


def test_an_invalid_upload_stores_nothing(media_root):
    agent = AgentFactory.create()

    with pytest.raises(WasmNoStart):
        binary_upload(agent=agent, data=wasm("no_start"))

    assert not AgentBinary.objects.filter(agent=agent).exists()
    assert stored_files(media_root) == []
    agent.refresh_from_db()
    assert agent.current_binary is None


def test_an_oversized_upload_is_refused(settings, media_root):
    settings.WASM_MAX_UPLOAD_BYTES = 1024

    with pytest.raises(WasmTooLarge) as raised:
        binary_upload(agent=AgentFactory.create(), data=wasm("echo") + b"\0" * 1024)

    assert raised.value.status == 413
    assert stored_files(media_root) == []


def test_the_stored_binary_runs_through_the_sandbox():
    from execution.engine import sandbox

    binary = binary_upload(agent=AgentFactory.create(slug="echo"), data=wasm("echo"))

    result = sandbox.run(
        sha256=binary.sha256,
        load=lambda: binary_read(binary),
        stdin=b"stored and run",
        argv=["echo"],
        limits=sandbox.Limits.for_task(fuel=10**8, memory_mb=16, timeout_ms=2_000),
    )

    assert result.stdout == b"stored and run"
    assert binary_storage().exists(binary.storage_name)
