"""What a person does in the browser, end to end, with real workers running the tasks."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from escrow.models import Account
from escrow.services import deposit_create
from marketplace.models import AgentBinary, Task
from marketplace.services import user_create
from tests.browser.conftest import AGENTS, PASSWORD, Screen, sample_agent
from tests.workers import Cluster

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TASK_SETTLES = 30_000  # ms: a worker starts, claims, runs and settles
# The wallet page holds the deposit form and the withdraw form, each with an "Amount".
DEPOSIT_FORM = 'form[action="/wallet/"]'


def credits(micro: int) -> str:
    whole, rest = divmod(micro, 1_000_000)
    return f"{whole}.{rest:06d} CR"


@pytest.mark.postgres
@pytest.mark.slow
def test_sign_up_deposit_run_a_task_and_see_the_money(screen: Screen, demo_owner: Any):
    sample_agent(demo_owner, "echo", name="Echo", description="Returns its input unchanged.")
    page = screen.page
    with Cluster() as cluster:
        screen.go("/accounts/signup/")
        screen.shot("01-signup")
        page.get_by_label("Username").fill("carol")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign up").click()

        # A new user lands on the wallet and adds credits.
        page.wait_for_url(re.compile(r"/wallet/$"))
        expect(page.get_by_text("Welcome, carol!")).to_be_visible()
        page.locator(DEPOSIT_FORM).get_by_label("Amount").fill("5")
        page.get_by_role("button", name="Deposit").click()
        expect(page.get_by_test_id("balance")).to_have_text("5.000000 CR")
        expect(page.get_by_text("Added 5.000000 CR.")).to_be_visible()
        screen.shot("02-wallet-after-deposit")

        # Submit a task to the echo agent.
        screen.go("/tasks/new/")
        page.get_by_label("Agent").select_option("echo")
        page.get_by_label("Input").fill("hello from the browser")
        page.get_by_label("Budget").fill("0.1")
        screen.shot("03-new-task")
        page.get_by_role("button", name="Submit task").click()
        page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))

        # The page turns to succeeded by itself: mark the document to prove it never reloads.
        page.evaluate("window.notReloaded = true")
        status = page.get_by_test_id("task-status")
        expect(status).to_have_text("succeeded", timeout=TASK_SETTLES)
        assert page.evaluate("window.notReloaded") is True, cluster.output()
        # Done with the worker; a SIGKILL is instant, a graceful stop takes a while.
        cluster.kill()

    task = Task.objects.get(requester__username="carol")
    assert task.cost is not None and task.fee is not None and task.refund is not None
    expect(page.get_by_test_id("output")).to_have_text("hello from the browser")
    expect(page.get_by_test_id("cost")).to_have_text(credits(task.cost))
    expect(page.get_by_test_id("fee")).to_have_text(credits(task.fee))
    expect(page.get_by_test_id("refund")).to_have_text(credits(task.refund))
    assert "hx-trigger" not in (page.locator("#task-panel").get_attribute("hx-trigger") or "")

    page.get_by_role("button", name="Verify signature").click()
    expect(page.get_by_text("✓ Valid signature")).to_be_visible()
    screen.shot("04-task-succeeded")

    # The wallet shows what is left: the deposit minus what the run cost.
    left = 5_000_000 - task.cost
    assert Account.objects.get(user__username="carol").balance == left
    screen.go("/wallet/")
    expect(page.get_by_test_id("balance")).to_have_text(credits(left))
    expect(page.get_by_text("Refund from escrow")).to_be_visible()
    screen.shot("05-wallet-after-task")
    screen.go("/")
    expect(page.get_by_test_id("balance")).to_have_text(credits(left))
    screen.shot("06-dashboard")


@pytest.mark.postgres
@pytest.mark.slow
def test_a_failing_task_shows_its_reason_and_the_refund(screen: Screen, demo_owner: Any):
    sample_agent(demo_owner, "primes", name="Primes", fuel_price=10_000)
    dora = user_create(username="dora", password=PASSWORD)
    deposit_create(user_id=dora.pk, amount=2_000_000)
    screen.log_in_quickly(dora)
    page = screen.page
    with Cluster() as cluster:
        screen.go("/tasks/new/?agent=primes")
        page.get_by_label("Input").fill("a dozen")
        page.get_by_label("Budget").fill("0.5")
        page.get_by_role("button", name="Submit task").click()
        page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))
        expect(page.get_by_test_id("task-status")).to_have_text("failed", timeout=TASK_SETTLES)
        assert Task.objects.get().failure_reason == "exit_nonzero", cluster.output()
        cluster.kill()

    failure = page.get_by_test_id("failure")
    expect(failure).to_contain_text("The agent exited with a non-zero code")
    expect(failure).to_contain_text("Your budget of 0.500000 CR was refunded in full.")
    expect(page.get_by_test_id("refund")).to_have_text("0.500000 CR")
    expect(page.get_by_test_id("cost")).to_have_text("0.000000 CR")
    expect(page.get_by_text("primes: expected an integer")).to_be_visible()
    screen.shot("07-task-failed")
    assert Account.objects.get(user=dora).balance == 2_000_000


def test_an_owner_lists_an_agent_and_sees_why_a_bad_binary_is_refused(
    screen: Screen, demo_owner: Any
):
    page = screen.page
    screen.log_in("demo-owner")
    screen.go("/agents/new/")
    page.get_by_label("Name").fill("Shouter")
    page.get_by_label("Slug").fill("shouter")
    page.get_by_label("Description").fill("Echoes its input, loudly.")
    page.get_by_label("Base fee").fill("0.002")
    page.get_by_label("Fuel price").fill("0.001")
    screen.shot("08-new-agent")
    page.get_by_role("button", name="Create agent").click()
    page.wait_for_url(re.compile(r"/agents/shouter/binaries/new/$"))

    upload = page.get_by_label("WebAssembly binary")
    upload.set_input_files(
        {"name": "shouter.wasm", "mimeType": "application/wasm", "buffer": b"#!/bin/sh\n"}
    )
    page.get_by_role("button", name="Upload and validate").click()
    error = page.locator("#id_wasm_error")
    expect(error).to_have_text("The file is not a WebAssembly binary.")
    expect(page.locator(".field.has-error")).to_contain_text("WebAssembly binary")
    screen.shot("09-binary-refused")
    assert not AgentBinary.objects.exists()

    upload.set_input_files(str(AGENTS / "echo.wasm"))
    page.get_by_role("button", name="Upload and validate").click()
    page.wait_for_url(re.compile(r"/agents/shouter/$"))
    expect(page.get_by_text("Version 1 is live")).to_be_visible()
    expect(page.get_by_test_id("earnings")).to_have_text("0.000000 CR")
    screen.shot("10-agent-page-owner")


def test_forms_work_without_javascript(browser: Any, live_server: Any, transactional_db: Any):
    user_create(username="erin", password=PASSWORD)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(live_server.url + "/accounts/login/")
        page.get_by_label("Username").fill("erin")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(live_server.url + "/")
        page.goto(live_server.url + "/wallet/")

        page.locator(DEPOSIT_FORM).get_by_label("Amount").fill("1.0000001")
        page.get_by_role("button", name="Deposit").click()
        expect(page.locator("#id_amount_error")).to_contain_text("At most 6 decimal places")

        page.locator(DEPOSIT_FORM).get_by_label("Amount").fill("2.5")
        page.get_by_role("button", name="Deposit").click()
        # POST/redirect/GET: the page after the deposit is a plain GET of the wallet.
        assert page.url == live_server.url + "/wallet/"
        expect(page.get_by_test_id("balance")).to_have_text("2.500000 CR")
        page.reload()
        expect(page.get_by_test_id("balance")).to_have_text("2.500000 CR")
    finally:
        context.close()
    assert Account.objects.get(user__username="erin").balance == 2_500_000


@pytest.mark.postgres
@pytest.mark.slow
def test_open_a_channel_pay_a_task_through_it_and_close_it(screen: Screen, demo_owner: Any):
    sample_agent(demo_owner, "echo", name="Echo")
    frank = user_create(username="frank", password=PASSWORD)
    deposit_create(user_id=frank.pk, amount=5_000_000)
    screen.log_in_quickly(frank)
    page = screen.page
    with Cluster() as cluster:
        screen.go("/channels/")
        page.get_by_label("Agent").select_option("echo")
        page.get_by_label("Deposit").fill("1")
        page.get_by_role("button", name="Open channel").click()
        page.wait_for_url(re.compile(r"/channels/[0-9a-f-]{36}/$"))
        expect(page.get_by_test_id("deposit")).to_have_text("1.000000 CR")
        expect(page.get_by_test_id("available")).to_have_text("1.000000 CR")

        page.get_by_role("link", name="Run a task on it").click()
        expect(page.get_by_label("Pay with")).to_have_value(re.compile(r"^[0-9a-f-]{36}$"))
        page.get_by_label("Input").fill("paid by voucher")
        page.get_by_label("Budget").fill("0.1")
        page.get_by_role("button", name="Submit task").click()
        page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}/$"))
        expect(page.get_by_test_id("task-status")).to_have_text("succeeded", timeout=TASK_SETTLES)
        assert Task.objects.get().payment == "channel", cluster.output()
        cluster.kill()

    task = Task.objects.get()
    assert task.cost is not None
    page.get_by_role("link", name="channel to Echo").click()
    expect(page.get_by_test_id("redeemed")).to_have_text(credits(task.cost))
    expect(page.locator("table")).to_contain_text("succeeded")
    screen.shot("11-channel-open")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Close channel").click()
    expect(page.get_by_text("Channel closed and settled")).to_be_visible()
    expect(page.locator("h1 .badge")).to_have_text("settled")
    expect(page.get_by_test_id("available")).to_have_text(credits(1_000_000 - task.cost))
    screen.shot("12-channel-settled")
    assert Account.objects.get(user=frank).balance == 5_000_000 - task.cost
