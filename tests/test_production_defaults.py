"""Production is the default: DEBUG off unless set, the dev funding provider off with it,
and every key production needs given by the environment (development generates them)."""

from __future__ import annotations

import base64
import secrets

import pytest

from tests.test_settings import manage, production_keys

PRINT_SETTINGS = (
    "from django.conf import settings as s; "
    "print(s.DEBUG, s.DEV_FUNDING_ENABLED, len(s.CUSTODIAL_KEY_RING), "
    "len(s.RECEIPT_SIGNING_KEYS))"
)
DEPOSIT_WITH_THE_DEV_PROVIDER = (
    "from escrow.funding import funding_provider; from escrow.errors import DomainError\n"
    "try:\n"
    "    print(funding_provider('dev').collect(user_id=1, amount=1, reference='r'))\n"
    "except DomainError as exc:\n"
    "    print(exc.code)"
)


def shell(command: str, env: dict[str, str]) -> str:
    result = manage("shell", "-c", command, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_debug_is_off_unless_set(tmp_path):
    env = {**production_keys(), "DATA_DIR": str(tmp_path)}

    assert shell(PRINT_SETTINGS, env) == "False False 1 1"
    assert shell(PRINT_SETTINGS, {**env, "DEBUG": "true"}) == "True True 1 1"


def test_the_dev_funding_provider_is_off_in_production_unless_enabled(tmp_path):
    env = {**production_keys(), "DATA_DIR": str(tmp_path)}

    assert shell(DEPOSIT_WITH_THE_DEV_PROVIDER, env) == "funding_unavailable"
    assert shell(DEPOSIT_WITH_THE_DEV_PROVIDER, {**env, "DEV_FUNDING_ENABLED": "true"}) == "dev:r"
    assert shell(DEPOSIT_WITH_THE_DEV_PROVIDER, {**env, "DEBUG": "true"}) == "dev:r"
    off = {**env, "DEBUG": "true", "DEV_FUNDING_ENABLED": "false"}
    assert shell(DEPOSIT_WITH_THE_DEV_PROVIDER, off) == "funding_unavailable"


@pytest.mark.parametrize("missing", ["CUSTODIAL_KEY_RING", "RECEIPT_SIGNING_KEYS"])
def test_production_refuses_to_start_without_its_keys(tmp_path, missing):
    env = {k: v for k, v in production_keys().items() if k != missing}

    result = manage("check", env={**env, "DATA_DIR": str(tmp_path)})

    assert result.returncode != 0
    assert f"{missing} must be set when DEBUG is off" in result.stderr
    # …and generates no key in its place.
    assert not {"custodial_key_ring", "receipt_signing_key"} & {p.name for p in tmp_path.iterdir()}


def test_development_generates_its_keys_once_into_the_data_directory(tmp_path):
    env = {"DEBUG": "true", "DATA_DIR": str(tmp_path)}
    printed = (
        "from django.conf import settings as s; print(s.CUSTODIAL_KEY_RING, s.RECEIPT_SIGNING_KEYS)"
    )

    first, again = shell(printed, env), shell(printed, env)

    assert first == again
    for name in ("custodial_key_ring", "receipt_signing_key"):
        assert oct((tmp_path / name).stat().st_mode)[-3:] == "600"
        assert (tmp_path / name).read_text().strip() in first


def test_the_single_receipt_key_of_older_setups_is_still_read(tmp_path):
    keys = production_keys()
    key = keys.pop("RECEIPT_SIGNING_KEYS")
    single = {**keys, "RECEIPT_SIGNING_KEY": key}
    both = {**single, "RECEIPT_SIGNING_KEYS": base64.b64encode(secrets.token_bytes(32)).decode()}
    printed = "from django.conf import settings as s; print(s.RECEIPT_SIGNING_KEYS)"

    assert shell(printed, {**single, "DATA_DIR": str(tmp_path)}) == str(
        [single["RECEIPT_SIGNING_KEY"]]
    )
    refused = manage("check", env={**both, "DATA_DIR": str(tmp_path)})
    assert "set RECEIPT_SIGNING_KEYS or RECEIPT_SIGNING_KEY, not both" in refused.stderr


def test_malformed_keys_are_refused_when_first_used(settings):
    from django.core.exceptions import ImproperlyConfigured

    from escrow.keys import _custody
    from execution.engine.receipts import receipt_sign

    settings.CUSTODIAL_KEY_RING = ["not-a-fernet-key"]
    settings.RECEIPT_SIGNING_KEYS = ["bm90IDMyIGJ5dGVz"]
    with pytest.raises(ImproperlyConfigured, match="key 1 of CUSTODIAL_KEY_RING"):
        _custody()
    with pytest.raises(ImproperlyConfigured, match="key 1 of RECEIPT_SIGNING_KEYS"):
        receipt_sign({"a": 1})
