"""An agent owner withdraws from the wallet page and watches it get paid, without a reload
(a real worker pays it out through the dev provider)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from escrow.models import Withdrawal
from escrow.services import deposit_create
from tests.browser.conftest import Screen
from tests.workers import Cluster

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def test_an_owner_withdraws_and_sees_it_paid_without_a_reload(screen: Screen, demo_owner: Any):
    deposit_create(user_id=demo_owner.pk, amount=12_000_000)
    page = screen.page
    screen.log_in_quickly(demo_owner)
    screen.go("/wallet/")
    page.locator("#withdrawals").get_by_label("Amount").fill("5")
    page.get_by_test_id("withdraw").click()

    status = page.get_by_test_id("withdrawal-status").first
    expect(status).to_have_text("pending")
    expect(page.get_by_test_id("balance")).to_have_text("7.000000 CR")
    page.evaluate("window.__not_reloaded = true")
    screen.shot("withdrawals-01-pending")
    with Cluster() as cluster:
        expect(status).to_have_text("paid", timeout=30_000)
        assert Withdrawal.objects.get().status == "paid", cluster.output()
    expect(page.locator("#ledger")).to_contain_text("Withdrawal (paying out)")
    assert page.evaluate("window.__not_reloaded") is True
    screen.shot("withdrawals-02-paid")
