from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command

from execution.engine.receipts import (
    RECEIPT_VERSION,
    canonical_json,
    public_key_info,
    receipt_sign,
    receipt_verify,
)

DATA = {"task_id": "t-1", "cost": 1_247, "fee": 62, "status": "succeeded", "note": "café"}


def test_a_signed_receipt_verifies_and_its_payload_is_canonical():
    receipt = receipt_sign(DATA)
    assert receipt["payload"] == canonical_json(DATA)
    assert receipt["payload"].startswith('{"cost":1247,"fee":62,"note":"café"')
    assert receipt["key_id"] == public_key_info()["key_id"]
    assert receipt_verify(receipt)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: {**r, "payload": r["payload"].replace("1247", "1248")},
        lambda r: {
            **r,
            "payload": json.dumps(json.loads(r["payload"])),
        },  # same data, not canonical
        lambda r: {**r, "signature": base64.b64encode(b"\0" * 64).decode()},
        lambda r: {**r, "signature": "not base64!"},
        lambda r: {**r, "key_id": "0000000000000000"},
        lambda r: {k: v for k, v in r.items() if k != "signature"},
        lambda r: "a string",
    ],
)
def test_any_change_to_a_receipt_makes_it_invalid(tamper):
    assert not receipt_verify(tamper(receipt_sign(DATA)))


def test_a_receipt_signed_by_another_key_is_invalid():
    other = Ed25519PrivateKey.generate()
    payload = canonical_json(DATA)
    forged = {
        "payload": payload,
        "signature": base64.b64encode(other.sign(payload.encode())).decode(),
        "key_id": public_key_info()["key_id"],
    }
    assert not receipt_verify(forged)


def test_verify_receipt_command_accepts_a_good_receipt_and_refuses_a_bad_one(tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    receipt = receipt_sign(DATA)
    good.write_text(json.dumps(receipt))
    bad.write_text(json.dumps({**receipt, "payload": receipt["payload"].replace("62", "61")}))
    call_command("verify_receipt", str(good))
    assert "signature valid" in capsys.readouterr().out
    with pytest.raises(CommandError, match="INVALID"):
        call_command("verify_receipt", str(bad))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("verify_receipt", str(tmp_path / "missing.json"))


# A task's receipt in each format issued so far: 1 (no version), 2 (adds agent_version),
# 3 (drops reputation_delta, scored by the settlement's statement after signing).
FORMATS = [
    {**DATA, "reputation_delta": "3.4000"},
    {**DATA, "receipt_version": 2, "agent_version": 1, "reputation_delta": "-5.0000"},
    {**DATA, "receipt_version": RECEIPT_VERSION, "agent_version": 1},
]


@pytest.mark.parametrize("data", FORMATS, ids=["format 1", "format 2", "format 3"])
def test_a_receipt_of_every_format_keeps_verifying(data, tmp_path, capsys):
    receipt = receipt_sign(data)
    assert receipt_verify(receipt)
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    call_command("verify_receipt", str(path))
    assert "signature valid" in capsys.readouterr().out
    assert not receipt_verify({**receipt, "payload": receipt["payload"].replace("62", "61")})
