"""An owner earns (a real worker runs a task), watches the share wait as pending earnings,
sees it move to the balance when the hold ends, then withdraws part of it and sees it
paid — all on one wallet page that never reloads."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from escrow.earnings import earnings_release_due
from escrow.models import Earning, Withdrawal
from escrow.services import deposit_create
from marketplace.models import Task
from marketplace.services import task_submit, user_create
from tests.browser.conftest import PASSWORD, Screen, sample_agent
from tests.factories import balance
from tests.workers import Cluster

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

HOLD_SECONDS = 6
TASK_SETTLES = 30_000  # ms: a worker starts, claims, runs and settles
WITHDRAW = 1_500_000


def credits(micro: int) -> str:
    whole, rest = divmod(micro, 1_000_000)
    return f"{whole}.{rest:06d} CR"


def test_an_owner_sees_earnings_released_then_withdraws_them(screen: Screen, demo_owner: Any):
    # A base fee of 2 CR, so that one run earns more than the withdrawal minimum (1 CR).
    agent = sample_agent(demo_owner, "echo", name="Echo", base_fee=2_000_000, fuel_price=1_000)
    requester = user_create(username="rita", password=PASSWORD)
    deposit_create(user_id=requester.pk, amount=5_000_000)

    page = screen.page
    screen.log_in_quickly(demo_owner)
    screen.go("/wallet/")
    expect(page.get_by_test_id("pending-earnings")).to_have_text("0.000000 CR")
    expect(page.get_by_test_id("balance")).to_have_text("0.000000 CR")
    page.evaluate("window.__not_reloaded = true")

    with Cluster(EARNINGS_HOLD_SECONDS=str(HOLD_SECONDS)) as cluster:
        task = task_submit(requester=requester, agent=agent, input="hello", budget=3_000_000)
        pending = page.get_by_test_id("pending-earnings")
        expect(pending).not_to_have_text("0.000000 CR", timeout=TASK_SETTLES)
        task = Task.objects.get(pk=task.pk)
        assert task.status == "succeeded", cluster.output()
        assert task.cost is not None and task.fee is not None
        share = task.cost - task.fee
        assert task.fee == task.cost * 500 // 10_000 and share > WITHDRAW
        earning = Earning.objects.get(task=task)
        assert (earning.status, earning.amount) == ("held", share)

        # Pending: the share, its task and its release time; nothing spendable yet.
        expect(pending).to_have_text(credits(share))
        expect(page.get_by_test_id("balance")).to_have_text("0.000000 CR")
        rows = page.get_by_test_id("pending-list").locator("tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("Echo")
        expect(rows.first).to_contain_text(credits(share))
        release = timezone.localtime(earning.release_at)
        expect(rows.first.locator("time")).to_have_text(f"{release:%b %-d, %H:%M:%S}")
        screen.shot("earnings-01-pending")

        # The hold ends; the sweep (the scheduled one, or this call) releases the share.
        time.sleep(max(0.0, (earning.release_at - timezone.now()).total_seconds()) + 0.2)
        earnings_release_due()
        expect(page.get_by_test_id("balance")).to_have_text(credits(share))
        expect(pending).to_have_text("0.000000 CR")
        expect(page.get_by_test_id("pending-list")).to_have_count(0)
        assert Earning.objects.get(task=task).status == "released"
        # The balance changed under the page: the panel (ledger, forms) reloads once.
        expect(page.locator("#ledger")).to_contain_text("Earnings release")
        screen.shot("earnings-02-released")

        # Withdraw part of it; the worker pays it out.
        page.locator("#withdrawals").get_by_label("Amount").fill("1.5")
        page.get_by_test_id("withdraw").click()
        expect(page.get_by_test_id("balance")).to_have_text(credits(share - WITHDRAW))
        status = page.get_by_test_id("withdrawal-status").first
        expect(status).to_have_text("paid", timeout=30_000)
        assert Withdrawal.objects.get().status == "paid", cluster.output()

    assert page.evaluate("window.__not_reloaded") is True
    screen.shot("earnings-03-withdrawn")
    assert balance(demo_owner) == share - WITHDRAW
