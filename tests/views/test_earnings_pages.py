"""Held earnings on the pages: the wallet's live balances and pending list, and the
owner's earnings chart (released vs pending) on the dashboard."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from escrow.earnings import earnings_release_due
from escrow.models import Earning
from marketplace.disputes import dispute_file
from marketplace.selectors.earnings import earnings_chart
from tests.views.conftest import (
    HTMX,
    earned_by_owner,
    fragment,
    page,
    settle,
    submit,
)

pytestmark = pytest.mark.django_db

WALLET = reverse("wallet")
BALANCES = reverse("wallet-balances")


def cr(micro: int) -> str:
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d} CR"


@pytest.fixture
def done(funded_alice, echo):
    return settle(submit(funded_alice, echo))


def release_everything() -> None:
    earnings_release_due(now=timezone.now() + timedelta(days=30))


def test_the_owner_sees_pending_earnings_with_task_and_release_time(as_bob, done):
    share = earned_by_owner(done)
    earning = Earning.objects.get(task=done)

    body = page(as_bob.get(WALLET))

    assert f'<span class="stat-value" data-testid="pending-earnings">{cr(share)}</span>' in body
    assert '<span class="stat-value" data-testid="balance">0.000000 CR</span>' in body
    release = timezone.localtime(earning.release_at)
    assert f'<time datetime="{release.isoformat()}">{release:%b %-d, %H:%M:%S}</time>' in body
    assert 'data-testid="pending-list"' in body
    # bob is not the task's requester: its page is not his, the agent's page is.
    assert f'<a href="{reverse("agent-detail", args=["echo"])}">Echo' in body
    assert reverse("task-detail", args=[done.pk]) not in body
    assert str(done.pk)[:8] in body


def test_a_disputed_earning_is_marked_frozen(as_bob, funded_alice, done):
    dispute_file(task_id=done.pk, user=funded_alice, reason="wrong")

    body = page(as_bob.get(WALLET))

    assert '<span class="badge badge-frozen">frozen by dispute</span>' in body
    assert f'data-testid="pending-earnings">{cr(earned_by_owner(done))}</span>' in body
    assert '<span class="stat-sub" data-testid="next-release">frozen by disputes</span>' in body


def test_released_earnings_move_to_the_balance(as_bob, done):
    release_everything()

    body = fragment(as_bob.get(BALANCES, **HTMX))

    assert f'data-testid="balance">{cr(earned_by_owner(done))}</span>' in body
    assert 'data-testid="pending-earnings">0.000000 CR</span>' in body
    assert 'data-testid="pending-list"' not in body


def test_the_balances_refresh_themselves(as_bob, done):
    body = fragment(as_bob.get(BALANCES, **HTMX))

    assert f'hx-get="{BALANCES}?shown=0" hx-trigger="every 2s" hx-swap="outerHTML"' in body
    assert 'id="wallet-balances"' in body
    assert "Add credits" not in body  # only the live part: a form being typed in stays


def test_a_balance_that_changed_since_the_page_was_drawn_reloads_the_panel(as_bob, done):
    share = earned_by_owner(done)
    assert "HX-Trigger" not in as_bob.get(BALANCES, {"shown": "0"}, **HTMX)
    release_everything()

    stale = as_bob.get(BALANCES, {"shown": "0"}, **HTMX)
    current = as_bob.get(BALANCES, {"shown": str(share)}, **HTMX)

    assert stale["HX-Trigger"] == "wallet-changed"  # the ledger below has a new line
    assert f'hx-get="{BALANCES}?shown={share}"' in fragment(stale)
    assert "HX-Trigger" not in current


def test_a_plain_request_for_the_balances_goes_to_the_wallet(as_bob, anon):
    assert as_bob.get(BALANCES)["Location"] == WALLET
    assert anon.get(BALANCES)["Location"] == f"{reverse('login')}?next={BALANCES}"


def test_nobody_else_sees_an_owners_pending_earnings(as_charlie, as_alice, done):
    for client in (as_charlie, as_alice):
        body = fragment(client.get(BALANCES, **HTMX))
        assert 'data-testid="pending-earnings">0.000000 CR</span>' in body
        assert 'data-testid="pending-list"' not in body


def test_the_owners_own_task_links_to_its_page(as_bob, bob, echo):
    from escrow.services import deposit_create

    deposit_create(user_id=bob.pk, amount=1_000_000)
    own = settle(submit(bob, echo))

    body = page(as_bob.get(WALLET))

    assert f'<a href="{reverse("task-detail", args=[own.pk])}">Echo task</a>' in body


def test_the_owners_dashboard_draws_earnings_released_and_pending(as_bob, funded_alice, echo):
    first = settle(submit(funded_alice, echo))
    release_everything()
    second = settle(submit(funded_alice, echo))

    body = page(as_bob.get(reverse("dashboard")))

    assert 'data-testid="earnings-chart"' in body
    assert f'data-testid="chart-released">{cr(earned_by_owner(first))}</strong>' in body
    assert f'data-testid="chart-pending">{cr(earned_by_owner(second))}</strong>' in body
    assert 'class="bar bar-released"' in body and 'class="bar bar-pending"' in body
    assert f'data-testid="pending-earnings">{cr(earned_by_owner(second))}</span>' in body


def test_no_chart_and_no_pending_figure_for_a_requester(as_alice, done):
    body = page(as_alice.get(reverse("dashboard")))

    assert 'data-testid="earnings-chart"' not in body
    assert 'data-testid="pending-earnings"' not in body


def test_the_chart_stacks_a_days_pending_on_its_released(bob, funded_alice, echo):
    first = settle(submit(funded_alice, echo))
    release_everything()
    second = settle(submit(funded_alice, echo))
    released, pending = earned_by_owner(first), earned_by_owner(second)

    chart = earnings_chart(bob)

    today = chart.bars[-1]
    assert len(chart.bars) == 14 and today.day == timezone.localdate()
    assert (today.released, today.pending) == (released, pending)
    assert (chart.released, chart.pending) == (released, pending)
    assert all(bar.released == bar.pending == 0 for bar in chart.bars[:-1])
    # The axis tops at the next 1-2-5 step above the day's total.
    top = chart.grid[-1][1]
    assert top >= released + pending and str(top)[0] in "125"
    plot = chart.plot_bottom - chart.top
    assert today.released_height == pytest.approx(plot * released / top)
    assert today.pending_y == pytest.approx(chart.plot_bottom - plot * (released + pending) / top)


def test_refunded_earnings_are_not_drawn(bob, funded_alice, echo):
    from marketplace.disputes import dispute_accept

    task = settle(submit(funded_alice, echo))
    dispute = dispute_file(task_id=task.pk, user=funded_alice, reason="wrong")
    dispute_accept(dispute_id=dispute.pk, user=bob)

    chart = earnings_chart(bob)

    assert chart.empty and (chart.released, chart.pending) == (0, 0)
