"""docs/api.md's voucher example, run as written against a live server: the bytes it signs,
its base64 and its cumulative amounts are what the API accepts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from escrow.models import PaymentChannel
from marketplace.models import Task
from marketplace.services import user_create
from tests.factories import make_agent

API_DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def voucher_example() -> str:
    section = API_DOCS.read_text().split("## Paying from a channel: signing vouchers", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "docs/api.md has no Python voucher example"
    return found.group(1)


@pytest.mark.django_db(transaction=True)
def test_the_documented_voucher_example_pays_two_tasks_from_a_channel(live_server: Any):
    from escrow.services import deposit_create

    ada = user_create(username="ada", password="a long enough passphrase")
    deposit_create(user_id=ada.pk, amount=5_000_000)
    make_agent(user_create(username="owner", password="a long enough passphrase"), slug="echo")
    code = voucher_example().replace("http://127.0.0.1:8000", live_server.url)

    exec(compile(code, str(API_DOCS), "exec"), {})  # noqa: S102 (the project's own docs)

    channel = PaymentChannel.objects.get(requester=ada)
    assert (channel.nonce, channel.reserved, channel.authorized) == (2, 200_000, 200_000)
    assert Task.objects.filter(requester=ada, payment="channel").count() == 2
