"""Payment channels in the browser: open one, pay tasks through it, see vouchers, close it."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from escrow.models import PaymentChannel, Transfer, Voucher
from marketplace.models import Task
from tests.factories import balance, held_for, make_agent
from tests.views.conftest import HTMX, cost_of, earned_by_owner, fragment, page, settle

CHANNELS = reverse("channel-list")
KEY = "channel-form-key-0123456789"

pytestmark = pytest.mark.django_db


def open_channel(client, agent: str = "echo", deposit: str = "2", key: str = KEY, **extra):
    return client.post(
        CHANNELS, {"agent": agent, "deposit": deposit, "idempotency_key": key}, **extra
    )


def detail(channel: PaymentChannel) -> str:
    return reverse("channel-detail", args=[channel.pk])


def field_errors(body: str, field: str) -> str:
    parts = body.split(f'id="id_{field}_error"')
    assert len(parts) == 2, f"no errors shown for {field}"
    return html.unescape(parts[1].split("</ul>")[0])


def pay_with_channel(client, channel: PaymentChannel, budget: str = "0.25", **fields):
    data = {
        "agent": "echo",
        "input": "hi",
        "budget": budget,
        "payment": str(channel.pk),
        "idempotency_key": fields.pop("key", "task-form-key-0123456789"),
        **fields,
    }
    return client.post(reverse("task-new"), data)


@pytest.fixture
def channel(as_alice, funded_alice, echo) -> PaymentChannel:
    open_channel(as_alice)
    return PaymentChannel.objects.get()


def test_the_channels_page_has_a_form_and_an_empty_state(as_alice, echo):
    body = page(as_alice.get(CHANNELS))

    assert '<label for="id_agent">Agent' in body
    assert '<label for="id_deposit">Deposit' in body
    assert "No channels yet" in body
    assert "Channels to your agents" not in body


def test_opening_a_channel_moves_the_deposit_out_of_the_wallet(as_alice, funded_alice, echo):
    response = open_channel(as_alice, deposit="2.5")

    channel = PaymentChannel.objects.get()
    assert response["Location"] == detail(channel)
    assert (channel.requester, channel.agent, channel.deposit) == (funded_alice, echo, 2_500_000)
    assert balance(funded_alice) == 7_500_000
    opened = as_alice.get(detail(channel)).content.decode()
    assert "Channel to Echo open with 2.500000 CR." in opened
    assert detail(channel) in as_alice.get(CHANNELS).content.decode()
    dashboard = as_alice.get(reverse("dashboard")).content.decode()
    assert 'data-testid="in-channels">2.500000 CR<' in dashboard


def test_the_same_form_opens_one_channel(as_alice, funded_alice, echo):
    open_channel(as_alice)
    open_channel(as_alice)

    assert PaymentChannel.objects.count() == 1
    assert balance(funded_alice) == 8_000_000

    reused = open_channel(as_alice, deposit="3").content.decode()
    assert "already used to open another channel" in reused
    assert PaymentChannel.objects.count() == 1


@pytest.mark.parametrize(
    ("deposit", "message"),
    [
        ("11", "Your wallet cannot cover this deposit."),
        ("0", "greater than zero"),
        ("x", "Enter an amount in credits"),
        ("0.0000001", "At most 6 decimal places"),
    ],
)
def test_deposit_errors_appear_next_to_the_field(as_alice, funded_alice, echo, deposit, message):
    response = open_channel(as_alice, deposit=deposit)

    assert message in field_errors(response.content.decode(), "deposit")
    assert not PaymentChannel.objects.exists()
    assert balance(funded_alice) == 10_000_000


def test_an_htmx_opening_gets_errors_in_place_or_a_client_redirect(as_alice, funded_alice, echo):
    failed = fragment(open_channel(as_alice, deposit="-1", **HTMX))
    assert failed.lstrip().startswith('<form id="channel-form"')

    done = open_channel(as_alice, **HTMX)
    assert done["HX-Redirect"] == detail(PaymentChannel.objects.get())


def test_a_task_paid_through_the_channel_holds_nothing_in_escrow(as_alice, funded_alice, channel):
    form = as_alice.get(reverse("task-new"), {"agent": "echo", "channel": channel.pk})
    assert f'<option value="{channel.pk}" selected>' in form.content.decode()
    assert "Channel to Echo: 2.000000 CR available" in form.content.decode()

    response = pay_with_channel(as_alice, channel)

    task = Task.objects.get()
    assert response["Location"] == reverse("task-detail", args=[task.pk])
    assert task.payment == "channel"
    assert balance(funded_alice) == 8_000_000  # nothing more left the wallet
    channel.refresh_from_db()
    assert (channel.nonce, channel.reserved, channel.in_flight) == (1, 250_000, 1)
    voucher = Voucher.objects.get()
    assert (voucher.task, voucher.cumulative_amount) == (task, 250_000)

    settle(task)
    channel.refresh_from_db()
    assert (channel.redeemed, channel.reserved) == (cost_of(task), 0)
    task_page = as_alice.get(reverse("task-detail", args=[task.pk])).content.decode()
    assert "Budget signed for" in task_page and "Left in the channel" in task_page
    assert f'{detail(channel)}">channel to Echo</a> (voucher 1)' in task_page
    body = as_alice.get(detail(channel)).content.decode()
    assert "Voucher history" in body and reverse("task-detail", args=[task.pk]) in body
    assert f'data-testid="redeemed">{cost_of(task) / 1e6:.6f} CR<' in body


def test_a_channel_pays_only_its_own_agent(as_alice, funded_alice, channel, bob):
    make_agent(bob, slug="other", name="Other")

    response = pay_with_channel(as_alice, channel, agent="other")

    assert "This channel pays Echo, not Other." in field_errors(
        response.content.decode(), "payment"
    )
    assert not Task.objects.exists()


def test_a_budget_beyond_what_the_channel_has_left_is_refused(as_alice, funded_alice, channel):
    response = pay_with_channel(as_alice, channel, budget="3")

    errors = field_errors(response.content.decode(), "payment")
    assert "This channel has 2.000000 CR available; lower the budget" in errors
    assert not Task.objects.exists()
    assert PaymentChannel.objects.get().reserved == 0


def test_closing_an_idle_channel_settles_it_at_once(as_alice, funded_alice, channel, bob):
    task = settle(Task.objects.get(pk=_submitted(as_alice, channel)))

    response = as_alice.post(reverse("channel-close", args=[channel.pk]))

    assert response["Location"] == detail(channel)
    channel.refresh_from_db()
    assert channel.status == "settled"
    assert balance(funded_alice) == 10_000_000 - cost_of(task)
    assert (balance(bob), held_for(bob)) == (0, earned_by_owner(task))
    body = as_alice.get(detail(channel)).content.decode()
    assert "Channel closed and settled" in body
    assert "Close channel" not in body
    # The agent's owner sees the payout as earnings.
    agent_page = as_alice.get(reverse("agent-detail", args=["echo"]))
    assert "Your earnings" not in agent_page.content.decode()
    ledger = as_alice.get(reverse("wallet")).content.decode()
    assert "Channel refund" in ledger and "Channel deposit" in ledger

    again = as_alice.post(reverse("channel-close", args=[channel.pk]), follow=True)
    assert "already settled" in again.content.decode()


def test_a_channel_with_a_task_in_flight_closes_after_it(as_alice, funded_alice, channel):
    task = Task.objects.get(pk=_submitted(as_alice, channel))

    as_alice.post(reverse("channel-close", args=[channel.pk]))

    channel.refresh_from_db()
    assert channel.status == "closing"
    body = as_alice.get(detail(channel)).content.decode()
    assert "Channel closing" in body and "1 left" in body
    settle(task)
    channel.refresh_from_db()
    assert channel.status == "settled"


def test_the_owner_sees_channels_to_their_agents_and_their_earnings(as_bob, as_alice, channel):
    task = settle(Task.objects.get(pk=_submitted(as_alice, channel)))
    as_alice.post(reverse("channel-close", args=[channel.pk]))

    body = as_bob.get(CHANNELS).content.decode()
    assert "Channels to your agents" in body and "alice" in body
    owner_view = as_bob.get(detail(channel)).content.decode()
    assert "opened by alice" in owner_view
    assert reverse("task-detail", args=[task.pk]) not in owner_view  # the task is alice's
    agent_page = as_bob.get(reverse("agent-detail", args=["echo"])).content.decode()
    assert f'data-testid="earnings">{earned_by_owner(task) / 1e6:.6f} CR<' in agent_page
    assert Transfer.objects.filter(kind="channel_payout").count() == 1


def test_nobody_else_sees_or_closes_a_channel(as_charlie, anon, channel):
    assert as_charlie.get(detail(channel)).status_code == 404
    assert as_charlie.post(reverse("channel-close", args=[channel.pk])).status_code == 404
    assert anon.get(detail(channel)).status_code == 302
    assert PaymentChannel.objects.get().status == "open"
    assert "No channels yet" in as_charlie.get(CHANNELS).content.decode()


def _submitted(client, channel: PaymentChannel) -> str:
    response = pay_with_channel(client, channel)
    assert response.status_code == 302, response.content.decode()[-3000:]
    return response["Location"].rstrip("/").rsplit("/", 1)[-1]
