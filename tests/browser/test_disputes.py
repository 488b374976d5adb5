"""A requester disputes a succeeded task and its agent's owner accepts: each, in their own
browser, watches the money move without a reload (the requester's balance up by the
task's cost, the owner's pending earnings down to nothing)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from escrow.models import Dispute, Earning
from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Task
from marketplace.services import task_submit, user_create
from tests.browser.conftest import PASSWORD, Screen, sample_agent
from tests.factories import balance

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

START = 10_000_000
# cost = base fee 1_000 + 2_000_000 fuel × 1_000 µCR per million = 3_000 µCR;
# the platform's fee is 5 % of it (150), the owner's held share the other 2_850.
RUN = Execution(exit_code=0, stdout=b"hello", fuel_used=2_000_000, fuel_limit=10**8, elapsed_ms=3)


def settled_task(requester: Any, owner: Any) -> Task:
    """A task run and settled as a worker would, with a known cost."""
    agent = sample_agent(owner, "echo", name="Echo")
    task = task_submit(requester=requester, agent=agent, input="hello", budget=100_000)
    claim = task_claim(task_id=task.pk)
    assert claim is not None
    assert task_settle(task_id=task.pk, attempt=claim[1], execution=RUN)
    return Task.objects.get(pk=task.pk)


def test_a_disputed_task_is_refunded_when_the_owner_accepts(
    browser: Any, screen: Screen, demo_owner: Any
):
    requester = user_create(username="rita", password=PASSWORD)
    deposit_create(user_id=requester.pk, amount=START)
    task = settled_task(requester, demo_owner)
    assert (task.cost, task.fee) == (3_000, 150)

    # The requester disputes from the task's page.
    page = screen.page
    screen.log_in_quickly(requester)
    screen.go(f"/tasks/{task.pk}/")
    dispute = page.locator("#dispute")
    dispute.get_by_label("Reason").fill("It echoed the wrong greeting.")
    dispute.get_by_role("button", name="Dispute").click()
    expect(page.get_by_test_id("dispute-status")).to_have_text("open")
    expect(dispute).to_contain_text("The agent's share of this task is frozen")
    screen.shot("disputes-01-opened")

    # …and keeps their wallet open beside it.
    wallet = page.context.new_page()
    wallet.goto(screen.base_url + "/wallet/")
    expect(wallet.get_by_test_id("balance")).to_have_text("9.997000 CR")
    for tab in (page, wallet):
        tab.evaluate("window.__not_reloaded = true")

    # The owner, in a browser of their own, sees the dispute and the frozen share.
    owner_context = browser.new_context(viewport={"width": 1280, "height": 900})
    owner_context.set_default_timeout(10_000)
    try:
        owner = Screen(owner_context.new_page(), screen.base_url)
        owner.log_in_quickly(demo_owner)
        owner.go("/")
        expect(owner.page.get_by_test_id("pending-earnings")).to_have_text("0.002850 CR")
        received = owner.page.locator("#disputes-received")
        expect(received).to_contain_text("It echoed the wrong greeting.")
        expect(received.get_by_test_id("disputed-cost")).to_have_text("0.003000 CR")
        owner.page.evaluate("window.__not_reloaded = true")
        owner.shot("disputes-02-owner-sees-it")

        received.get_by_role("button", name="Accept and refund").click()
        expect(received).to_contain_text("No disputes to answer.")
        expect(owner.page.get_by_text("Dispute accepted: 0.003000 CR went back")).to_be_visible()
        expect(owner.page.get_by_test_id("pending-earnings")).to_have_text("0.000000 CR")
        assert owner.page.evaluate("window.__not_reloaded") is True
        owner.shot("disputes-03-owner-accepted")
        assert not owner.errors, owner.errors
    finally:
        owner_context.close()

    # The requester's pages catch up by themselves.
    expect(wallet.get_by_test_id("balance")).to_have_text("10.000000 CR")
    expect(wallet.locator("#ledger")).to_contain_text("Dispute refund")
    expect(page.get_by_test_id("dispute-status")).to_have_text("accepted")
    expect(page.get_by_test_id("dispute-refund")).to_have_text(
        "0.003000 CR went back to your wallet."
    )
    for tab in (page, wallet):
        assert tab.evaluate("window.__not_reloaded") is True
    screen.shot("disputes-04-requester-refunded")

    assert Dispute.objects.get().status == "accepted"
    assert Earning.objects.get(task=task).status == "refunded"
    assert balance(requester) == START
