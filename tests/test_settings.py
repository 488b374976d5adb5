from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from marketplace.settings import database_from_url, env_bool, env_int

ROOT = Path(__file__).resolve().parent.parent


# What the suite's own environment sets that these runs of the project's settings must not see.
SUITE_ONLY = (
    "DATABASE_URL",
    "DEBUG",
    "SECRET_KEY",
    "DJANGO_SETTINGS_MODULE",
    "CUSTODIAL_KEY_RING",
    "RECEIPT_SIGNING_KEYS",
    "RECEIPT_SIGNING_KEY",
    "DEV_FUNDING_ENABLED",
)


def production_keys() -> dict[str, str]:
    """The keys production must be given (development generates them)."""
    return {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "CUSTODIAL_KEY_RING": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "WEBHOOK_KEY_RING": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "RECEIPT_SIGNING_KEYS": base64.b64encode(secrets.token_bytes(32)).decode(),
    }


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`manage.py` with the project's settings, the environment `env` and nothing of the suite's."""
    base = {k: v for k, v in os.environ.items() if k not in SUITE_ONLY}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_env_helpers_fail_loudly_on_bad_values(monkeypatch):
    monkeypatch.setenv("SOME_INT", "12x")
    monkeypatch.setenv("SOME_BOOL", "perhaps")
    with pytest.raises(ImproperlyConfigured, match="SOME_INT must be an integer"):
        env_int("SOME_INT", 1)
    with pytest.raises(ImproperlyConfigured, match="SOME_BOOL must be a boolean"):
        env_bool("SOME_BOOL", True)
    monkeypatch.setenv("SOME_INT", "1_000")
    assert env_int("SOME_INT", 1) == 1000


def test_database_url_selects_postgresql():
    db = database_from_url("postgresql://app:s%40cret@db.internal:6543/exchange?sslmode=require")
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql",
        "exchange",
        "app",
        "s@cret",
        "db.internal",
        "6543",
    )
    assert db["OPTIONS"] == {
        "server_side_binding": True,
        "prepare_threshold": 5,
        "sslmode": "require",
    }
    with pytest.raises(ImproperlyConfigured):
        database_from_url("mysql://x@y/z")


def test_statements_are_bound_client_side_and_never_prepared_when_turned_off(monkeypatch):
    monkeypatch.setenv("DB_PREPARE_THRESHOLD", "1")
    assert database_from_url("postgresql://app@db/exchange")["OPTIONS"] == {
        "server_side_binding": True,
        "prepare_threshold": 1,
    }
    monkeypatch.setenv("DB_SERVER_SIDE_BINDING", "false")
    assert database_from_url("postgresql://app@db/exchange")["OPTIONS"] == {}


def test_production_settings_pass_the_deploy_check(tmp_path):
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env={
            "DEBUG": "false",
            **production_keys(),
            "ALLOWED_HOSTS": "exchange.example",
            "DATA_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = manage("check", env={"DEBUG": "false", "DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize("cap", ["0", "100.0001", "1000", "NaN", "lots"])
def test_a_daily_cap_a_score_cant_hold_is_refused_at_start(tmp_path, cap):
    env = {"DEBUG": "true", "DATA_DIR": str(tmp_path), "REPUTATION_DAILY_CAP_PER_REQUESTER": cap}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "REPUTATION_DAILY_CAP_PER_REQUESTER must be" in result.stderr


def test_development_generates_its_secret_key_once_into_the_data_directory(tmp_path):
    for _ in range(2):
        assert manage("check", env={"DEBUG": "true", "DATA_DIR": str(tmp_path)}).returncode == 0
    key = (tmp_path / "secret_key").read_text()
    assert len(key) >= 50
    assert oct((tmp_path / "secret_key").stat().st_mode)[-3:] == "600"


def test_production_serves_the_collected_static_files(tmp_path):
    env = {
        "DEBUG": "false",
        **production_keys(),
        "ALLOWED_HOSTS": "testserver",
        "DATA_DIR": str(tmp_path),
        "SECURE_SSL_REDIRECT": "false",
    }
    assert manage("collectstatic", "--noinput", "-v0", env=env).returncode == 0
    probe = (
        "import django; django.setup(); from django.test import Client; "
        "from django.templatetags.static import static; "
        "r = Client().get(static('css/app.css')); "
        "print(r.status_code, r.headers.get('Cache-Control'))"
    )
    result = manage("shell", "-c", probe, env=env)
    assert result.stdout.strip().splitlines()[-1].startswith("200 max-age="), (
        result.stdout + result.stderr
    )
