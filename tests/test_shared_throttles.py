"""Rate limits count in one cache that every process and host shares (SPEC §18, §23): the
database's cache table by default, Redis when REDIS_URL is set. A limit counted per process
would let each gunicorn worker, and each host, grant the whole rate again."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from marketplace.cache_config import CACHE_TABLE, cache_settings
from tests.factories import UserFactory, make_agent
from tests.test_development_env import clean_manage, make_dev_env
from tests.workers import database_url

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "/api/v1/auth/token/"
UPLOAD = "/api/v1/agents/fresh/binaries/"

# One process's requests, as `manage.py shell` runs them: LOGINS wrong passwords for alice on
# the token endpoint, then UPLOADS refused binaries by bob. Prints each response's status.
REQUESTS = """
import json, os
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient
from marketplace.models import Agent
from marketplace.services import agent_create

bob, _ = User.objects.get_or_create(username="bob")
if not Agent.objects.filter(slug="fresh").exists():
    agent_create(owner=bob, slug="fresh", name="Fresh", base_fee=1000, fuel_price=1000)
anonymous, as_bob = APIClient(HTTP_HOST="localhost"), APIClient(HTTP_HOST="localhost")
as_bob.force_authenticate(bob)
logins = [
    anonymous.post("/api/v1/auth/token/", {"username": "alice", "password": "guess"}).status_code
    for _ in range(int(os.environ["LOGINS"]))
]
uploads = [
    as_bob.post(
        "/api/v1/agents/fresh/binaries/",
        {"wasm": SimpleUploadedFile("agent.wasm", b"nope")},
        format="multipart",
    ).status_code
    for _ in range(int(os.environ["UPLOADS"]))
]
print(json.dumps({"logins": logins, "uploads": uploads}))
"""


def statuses(result: subprocess.CompletedProcess[str]) -> dict[str, list[int]]:
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default `make run` sets up: SQLite in DATA_DIR, the development file."""
    data_dir = tmp_path_factory.mktemp("checkout")
    make_dev_env(data_dir)
    migrated = clean_manage("migrate", "--noinput", "-v0", data_dir=data_dir)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    return data_dir


def in_checkout(data_dir: Path, logins: int, uploads: int, **env: str) -> dict[str, list[int]]:
    rates = {"API_AUTH_THROTTLE_RATE": "4/minute", "API_UPLOAD_THROTTLE_RATE": "2/hour"}
    return statuses(
        clean_manage(
            "shell",
            "-c",
            REQUESTS,
            data_dir=data_dir,
            LOGINS=str(logins),
            UPLOADS=str(uploads),
            **rates,
            **env,
        )
    )


def test_two_processes_share_the_counts_in_the_database_cache(checkout):
    first = in_checkout(checkout, logins=3, uploads=1)
    second = in_checkout(checkout, logins=2, uploads=2)

    assert first == {"logins": [400, 400, 400], "uploads": [400]}
    assert second == {"logins": [400, 429], "uploads": [400, 429]}


@pytest.mark.slow
def test_with_redis_the_counts_are_shared_and_kept_apart_per_deployment(tmp_path):
    from tests.rediscluster import RedisServer

    make_dev_env(tmp_path)
    assert clean_manage("migrate", "--noinput", "-v0", data_dir=tmp_path).returncode == 0
    redis = RedisServer().start()
    try:
        first = in_checkout(tmp_path, logins=3, uploads=1, REDIS_URL=redis.url)
        second = in_checkout(tmp_path, logins=2, uploads=2, REDIS_URL=redis.url)
        # Another deployment on the same Redis (its own SECRET_KEY, so its own key prefix)
        # counts for itself, and nothing was counted in this deployment's database cache.
        other = in_checkout(
            tmp_path, logins=1, uploads=1, REDIS_URL=redis.url, SECRET_KEY=secrets.token_hex(32)
        )
        without_redis = in_checkout(tmp_path, logins=1, uploads=1)
    finally:
        redis.stop()

    assert first == {"logins": [400, 400, 400], "uploads": [400]}
    assert second == {"logins": [400, 429], "uploads": [400, 429]}
    assert other == {"logins": [400], "uploads": [400]}
    assert without_redis == {"logins": [400], "uploads": [400]}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_process_and_this_one_share_the_counts_on_postgresql(settings, tmp_path):
    """The API token endpoint's `auth` rate (20 a minute) and the upload rate, counted half by
    another process on the same database and half here. (Its login buckets, 10 a minute, are
    raised out of the way; tests/test_login_throttle_processes.py has them.)"""
    cache.clear()  # transactional tests leave the cache table as the last one left it
    settings.API_UPLOAD_THROTTLE_RATE = "2/hour"
    settings.LOGIN_THROTTLE_RATE = "20/minute"
    bob = UserFactory.create(username="bob")
    make_agent(bob, slug="fresh", with_binary=False)
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DATA_DIR": str(settings.DATA_DIR),
        "MEDIA_ROOT": str(tmp_path),
        "API_UPLOAD_THROTTLE_RATE": "2/hour",
        "LOGIN_THROTTLE_RATE": "20/minute",
    }

    def other_process(logins: int, uploads: int) -> dict[str, list[int]]:
        return statuses(
            subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", REQUESTS],
                cwd=ROOT,
                env={**env, "LOGINS": str(logins), "UPLOADS": str(uploads)},
                capture_output=True,
                text=True,
                timeout=120,
            )
        )

    anonymous, as_bob = APIClient(), APIClient()
    as_bob.force_authenticate(bob)

    def login() -> int:
        return anonymous.post(TOKEN, {"username": "alice", "password": "guess"}).status_code

    def upload() -> int:
        wasm = SimpleUploadedFile("agent.wasm", b"nope")
        return as_bob.post(UPLOAD, {"wasm": wasm}, format="multipart").status_code

    assert other_process(logins=15, uploads=1) == {"logins": [400] * 15, "uploads": [400]}
    assert [login() for _ in range(5)] == [400] * 5
    assert (login(), upload(), upload()) == (429, 400, 429)
    assert other_process(logins=1, uploads=1) == {"logins": [429], "uploads": [429]}


def test_the_cache_is_the_database_cache_without_redis():
    assert settings.CACHES["default"]["BACKEND"] == "marketplace.cache_backend.DatabaseCache"
    assert settings.CACHES["default"]["LOCATION"] == CACHE_TABLE


def test_each_deployment_has_its_own_key_prefix_on_redis(monkeypatch):
    def prefix(secret_key: str) -> str:
        return cache_settings(redis_url="redis://cache:6379/0", secret_key=secret_key)["default"][
            "KEY_PREFIX"
        ]

    assert prefix("one deployment") == prefix("one deployment") != prefix("another")
    assert "one deployment" not in prefix("one deployment")
    monkeypatch.setenv("CACHE_KEY_PREFIX", "exchange-staging")
    assert prefix("one deployment") == "exchange-staging"


def test_the_cache_table_migration_is_reversible(checkout):
    tables = "from django.db import connection; print(connection.introspection.table_names())"

    def has_table() -> bool:
        result = clean_manage("shell", "-c", tables, data_dir=checkout)
        return "'marketplace_cache'" in result.stdout

    assert has_table()
    back = clean_manage("migrate", "marketplace", "0011", "-v0", data_dir=checkout)
    assert back.returncode == 0, back.stderr
    assert not has_table()
    forward = clean_manage("migrate", "-v0", data_dir=checkout)
    assert forward.returncode == 0, forward.stderr
    assert has_table()
