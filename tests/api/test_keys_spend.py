"""What an API key spends: each limit, the allowlist, give-backs at settlement and
cancellation, UTC day and month windows on a frozen clock, and channels.

Tasks run through the executor's own services (claim, settle) with the `Execution` a run
would produce, as in tests/test_executor_money.py. bob owns the agent; alice's programs
hold keys. The ledger audit runs after every test (tests/conftest.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from escrow.channels import channel_close, key_register
from escrow.models import Account, Escrow, PaymentChannel
from escrow.services import deposit_create
from execution.services import Execution, task_claim, task_settle
from marketplace.apikey_models import ApiKey, ApiKeyCharge
from marketplace.apikeys import KeyRefused, api_key_create, api_key_revoke, api_key_spending
from marketplace.models import Task
from marketplace.services import task_submit
from tests.factories import KEY, public, sign

from .conftest import error, make_agent

TASKS = "/api/v1/tasks/"
CHANNELS = "/api/v1/channels/"
BUDGET = 100_000
# echo's price (tests.factories.make_agent): 1 000 µCR base fee + 2 000 µCR per million fuel.
FUEL = 1_000_000
COST = 3_000


class Clock:
    """timezone.now() frozen at `now`, moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
        self.now = now
        monkeypatch.setattr(timezone, "now", lambda: self.now)

    def to(self, moment: datetime) -> None:
        self.now = moment


@pytest.fixture
def echo(bob):
    return make_agent(bob, slug="echo")


@pytest.fixture
def funded(alice):
    deposit_create(user_id=alice.pk, amount=50_000_000)
    return alice


def keyed(user: Any, **settings: Any) -> tuple[ApiKey, APIClient]:
    settings.setdefault("scopes", ["tasks:read", "tasks:write", "channels:write"])
    key, raw = api_key_create(user=user, name="robot", **settings)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return key, client


def submit(client: APIClient, budget: int = BUDGET, **extra: Any):
    return client.post(
        TASKS, {"agent": "echo", "input": "hi", "budget": budget, **extra}, format="json"
    )


def spent(key: ApiKey) -> tuple[int, int, int]:
    key.refresh_from_db()
    spending = api_key_spending(key)
    return spending.daily, spending.monthly, spending.total


def settle(task_id: Any, *, fuel: int | None = FUEL, reason: str = "") -> Task:
    claim = task_claim(task_id=task_id)
    assert claim is not None
    execution = Execution(reason=reason, exit_code=0 if not reason else 1, fuel_used=fuel or 0)
    assert task_settle(task_id=task_id, attempt=claim[1], execution=execution)
    return Task.objects.get(pk=task_id)


def balance(user: Any) -> int:
    return Account.objects.get(user=user).balance


# --- limits --------------------------------------------------------------------------------


def test_a_submission_counts_its_whole_budget_against_every_limit(funded, echo):
    key, robot = keyed(
        funded, limits={"daily": 1_000_000, "monthly": 2_000_000, "total": 3_000_000}
    )

    assert submit(robot).status_code == 201

    assert spent(key) == (BUDGET, BUDGET, BUDGET)
    charge = ApiKeyCharge.objects.get()
    assert (charge.amount, charge.given_back, charge.settled_at) == (BUDGET, 0, None)


@pytest.mark.parametrize(
    ("limits", "name", "remaining"),
    [
        ({"daily": 250_000}, "daily", 50_000),
        ({"monthly": 250_000}, "monthly", 50_000),
        ({"total": 250_000}, "total", 50_000),
        # Every limit short: the longest-lasting is named (waiting would not cure it).
        ({"daily": 250_000, "monthly": 260_000, "total": 270_000}, "total", 70_000),
        ({"daily": 250_000, "monthly": 260_000}, "monthly", 60_000),
    ],
)
def test_over_a_limit_is_402_naming_it_and_what_remains(funded, echo, limits, name, remaining):
    key, robot = keyed(funded, limits=limits)
    for _ in range(2):
        assert submit(robot).status_code == 201
    before = (balance(funded), Task.objects.count(), Escrow.objects.count(), spent(key))

    response = submit(robot)

    assert error(response) == (402, "spend_limit_exceeded")
    fields = response.json()["error"]["fields"]
    assert (fields["limit"], fields["remaining"], fields["requested"]) == (name, remaining, BUDGET)
    assert before == (balance(funded), Task.objects.count(), Escrow.objects.count(), spent(key))
    if len(limits) == 1:
        # What remains still fits, to the µCR.
        assert submit(robot, budget=remaining).status_code == 201
        assert error(submit(robot, budget=1_001)) == (402, "spend_limit_exceeded")


def test_the_per_task_limit_caps_one_budget(funded, echo):
    key, robot = keyed(funded, limits={"per_task": 50_000})

    response = submit(robot, budget=50_001)

    assert error(response) == (402, "spend_limit_exceeded")
    assert response.json()["error"]["fields"]["limit"] == "per_task"
    assert submit(robot, budget=50_000).status_code == 201
    assert submit(robot, budget=50_000).status_code == 201  # no window: only one budget
    assert spent(key) == (100_000, 100_000, 100_000)


def test_the_allowlist_refuses_other_agents_with_403(funded, echo, bob):
    make_agent(bob, slug="other")
    key, robot = keyed(funded, agents=[echo])

    response = robot.post(TASKS, {"agent": "other", "input": "x", "budget": BUDGET}, format="json")

    assert error(response) == (403, "agent_not_allowed")
    assert response.json()["error"]["fields"] == {"agents": ["echo"]}
    assert not Task.objects.exists() and spent(key) == (0, 0, 0)
    assert submit(robot).status_code == 201


def test_a_key_without_limits_counts_but_never_refuses(funded, echo):
    key, robot = keyed(funded)

    for _ in range(3):
        assert submit(robot).status_code == 201

    assert spent(key) == (3 * BUDGET, 3 * BUDGET, 3 * BUDGET)


def test_the_wallet_still_decides_what_the_key_can_afford(alice, echo):
    deposit_create(user_id=alice.pk, amount=BUDGET)
    key, robot = keyed(alice, limits={"daily": 10 * BUDGET})

    assert submit(robot).status_code == 201
    assert error(submit(robot)) == (402, "insufficient_funds")

    assert spent(key) == (BUDGET, BUDGET, BUDGET)  # the refused one counted nothing


def test_a_repeated_submission_with_the_same_idempotency_key_counts_once(funded, echo):
    key, robot = keyed(funded, limits={"daily": 150_000})
    body = {"agent": "echo", "input": "hi", "budget": BUDGET}

    first, again = (
        robot.post(TASKS, body, format="json", HTTP_IDEMPOTENCY_KEY="once") for _ in range(2)
    )

    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true"
    assert first.json()["id"] == again.json()["id"]
    assert spent(key) == (BUDGET, BUDGET, BUDGET)


def test_a_key_revoked_after_authenticating_counts_nothing(funded, echo):
    key, _ = keyed(funded)
    api_key_revoke(key=key)

    with pytest.raises(KeyRefused):
        task_submit(requester=funded, agent=echo, input="x", budget=BUDGET, api_key=key)

    assert not Task.objects.exists() and spent(key) == (0, 0, 0)


def test_token_and_session_submissions_count_against_no_key(funded, echo, as_alice):
    key, _ = keyed(funded, limits={"total": 1})

    assert (
        as_alice.post(
            TASKS, {"agent": "echo", "input": "x", "budget": BUDGET}, format="json"
        ).status_code
        == 201
    )

    assert spent(key) == (0, 0, 0)
    assert Task.objects.get().api_key_id is None


# --- giving back ---------------------------------------------------------------------------


def test_settlement_gives_back_what_was_refunded_and_frees_the_cap(funded, echo, bob):
    key, robot = keyed(funded, limits={"daily": 2 * BUDGET})
    first = submit(robot).json()["id"]
    assert submit(robot).status_code == 201
    assert error(submit(robot, budget=1_001)) == (402, "spend_limit_exceeded")

    task = settle(first)

    assert (task.cost, task.refund) == (COST, BUDGET - COST)
    assert spent(key) == (BUDGET + COST,) * 3
    charge = ApiKeyCharge.objects.get(task_id=first)
    assert (charge.given_back, charge.settled_at is not None) == (BUDGET - COST, True)
    # Exactly the refund is free again.
    assert error(submit(robot, budget=BUDGET - COST + 1)) == (402, "spend_limit_exceeded")
    assert submit(robot, budget=BUDGET - COST).status_code == 201
    assert spent(key) == (2 * BUDGET,) * 3


def test_a_failed_task_gives_back_its_whole_budget(funded, echo):
    key, robot = keyed(funded, limits={"total": BUDGET})
    task_id = submit(robot).json()["id"]

    task = settle(task_id, fuel=None, reason=Task.FailureReason.TRAP)

    assert (task.status, task.refund) == (Task.Status.FAILED, BUDGET)
    assert spent(key) == (0, 0, 0)
    assert submit(robot).status_code == 201


def test_cancelling_gives_back_the_budget(funded, echo):
    key, robot = keyed(funded, limits={"total": BUDGET})
    task_id = submit(robot).json()["id"]

    assert robot.post(f"{TASKS}{task_id}/cancel/").status_code == 200

    assert spent(key) == (0, 0, 0)
    assert ApiKeyCharge.objects.get().given_back == BUDGET


def test_a_second_settlement_attempt_gives_back_nothing_more(funded, echo):
    key, robot = keyed(funded)
    task_id = submit(robot).json()["id"]
    claim = task_claim(task_id=task_id)
    assert claim is not None
    done = Execution(exit_code=0, fuel_used=FUEL)

    assert task_settle(task_id=task_id, attempt=claim[1], execution=done)
    assert not task_settle(task_id=task_id, attempt=claim[1], execution=done)

    assert spent(key) == (COST, COST, COST)


def test_a_task_settles_and_gives_back_after_its_key_was_revoked(funded, echo):
    key, robot = keyed(funded)
    task_id = submit(robot).json()["id"]
    api_key_revoke(key=key)

    settle(task_id)

    assert spent(key) == (COST, COST, COST)


# --- windows -------------------------------------------------------------------------------


def test_the_daily_window_rolls_over_at_utc_midnight(funded, echo, monkeypatch):
    clock = Clock(monkeypatch, datetime(2031, 3, 14, 23, 59, 59, tzinfo=UTC))
    key, robot = keyed(funded, limits={"daily": BUDGET, "monthly": 3 * BUDGET})
    assert submit(robot).status_code == 201
    refused = submit(robot)
    assert error(refused) == (402, "spend_limit_exceeded")
    assert refused.json()["error"]["fields"]["resets_at"] == "2031-03-15T00:00:00+00:00"

    clock.to(datetime(2031, 3, 15, 0, 0, 0, tzinfo=UTC))

    assert spent(key) == (0, BUDGET, BUDGET)
    assert submit(robot).status_code == 201
    assert spent(key) == (BUDGET, 2 * BUDGET, 2 * BUDGET)


def test_the_monthly_window_rolls_over_at_the_end_of_the_utc_month(funded, echo, monkeypatch):
    clock = Clock(monkeypatch, datetime(2032, 2, 29, 23, 59, 59, tzinfo=UTC))  # a leap day
    key, robot = keyed(funded, limits={"monthly": BUDGET, "total": 2 * BUDGET})
    assert submit(robot).status_code == 201
    refused = submit(robot)
    assert refused.json()["error"]["fields"]["limit"] == "monthly"
    assert refused.json()["error"]["fields"]["resets_at"] == "2032-03-01T00:00:00+00:00"

    clock.to(datetime(2032, 3, 1, tzinfo=UTC))
    assert submit(robot).status_code == 201

    # The lifetime total never rolls over.
    clock.to(datetime(2032, 4, 1, tzinfo=UTC))
    refused = submit(robot)
    assert refused.json()["error"]["fields"]["limit"] == "total"
    assert spent(key) == (0, 0, 2 * BUDGET)


def test_the_windows_follow_utc_not_the_local_time_zone(funded, echo, monkeypatch, settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"  # UTC+14: already "tomorrow" there
    clock = Clock(monkeypatch, datetime(2031, 6, 30, 23, 0, tzinfo=UTC))
    _, robot = keyed(funded, limits={"daily": BUDGET})
    assert submit(robot).status_code == 201

    clock.to(datetime(2031, 6, 30, 23, 59, tzinfo=UTC))
    assert error(submit(robot)) == (402, "spend_limit_exceeded")
    clock.to(datetime(2031, 7, 1, tzinfo=UTC))
    assert submit(robot).status_code == 201


def test_a_give_back_after_the_window_rolled_over_leaves_the_new_window_alone(
    funded, echo, monkeypatch
):
    clock = Clock(monkeypatch, datetime(2031, 1, 31, 23, 0, tzinfo=UTC))
    key, robot = keyed(funded, limits={"daily": 2 * BUDGET, "monthly": 3 * BUDGET})
    yesterdays = submit(robot).json()["id"]
    clock.to(datetime(2031, 2, 1, 1, 0, tzinfo=UTC))  # a new day and a new month
    assert submit(robot).status_code == 201
    assert spent(key) == (BUDGET, BUDGET, 2 * BUDGET)

    settle(yesterdays)  # refunds BUDGET - COST, charged in January's 31st

    # Today's and February's counters still hold today's task in full; the total drops.
    assert spent(key) == (BUDGET, BUDGET, BUDGET + COST)
    assert ApiKeyCharge.objects.get(task_id=yesterdays).given_back == BUDGET - COST


def test_a_give_back_within_the_month_but_not_the_day_lowers_only_the_month(
    funded, echo, monkeypatch
):
    clock = Clock(monkeypatch, datetime(2031, 5, 10, 12, 0, tzinfo=UTC))
    key, robot = keyed(funded)
    yesterdays = submit(robot).json()["id"]
    clock.to(datetime(2031, 5, 11, 12, 0, tzinfo=UTC))
    assert submit(robot).status_code == 201

    settle(yesterdays)

    assert spent(key) == (BUDGET, BUDGET + COST, BUDGET + COST)


def test_a_give_back_before_any_new_charge_lowers_the_old_window_which_then_reads_zero(
    funded, echo, monkeypatch
):
    clock = Clock(monkeypatch, datetime(2031, 5, 10, 12, 0, tzinfo=UTC))
    key, robot = keyed(funded, limits={"daily": BUDGET})
    task_id = submit(robot).json()["id"]
    clock.to(datetime(2031, 5, 11, 12, 0, tzinfo=UTC))

    settle(task_id)

    key.refresh_from_db()
    assert (key.spent_daily, key.spent_daily_on) == (COST, datetime(2031, 5, 10).date())
    assert spent(key) == (0, COST, COST)
    assert submit(robot).status_code == 201


# --- channels ------------------------------------------------------------------------------


def open_channel(client: APIClient, deposit: int):
    return client.post(CHANNELS, {"agent": "echo", "deposit": deposit}, format="json")


def pay_by_channel(client: APIClient, channel_id: str, nonce: int, cumulative: int, budget: int):
    return submit(
        client,
        budget=budget,
        payment="channel",
        channel=channel_id,
        voucher=sign(channel_id, nonce, cumulative),
    )


def test_a_channel_opened_with_a_key_counts_its_deposit(funded, echo):
    key, robot = keyed(funded, limits={"daily": 1_000_000})

    response = open_channel(robot, 600_000)
    assert response.status_code == 201
    assert spent(key) == (600_000,) * 3
    assert ApiKeyCharge.objects.get().channel_id is not None

    refused = open_channel(robot, 400_001)
    assert error(refused) == (402, "spend_limit_exceeded")
    assert refused.json()["error"]["fields"]["remaining"] == 400_000
    assert PaymentChannel.objects.count() == 1


def test_a_channel_is_opened_only_to_an_allowed_agent(funded, echo, bob):
    make_agent(bob, slug="other")
    _, robot = keyed(funded, agents=[echo])

    response = robot.post(CHANNELS, {"agent": "other", "deposit": 10_000}, format="json")

    assert error(response) == (403, "agent_not_allowed")
    assert not PaymentChannel.objects.exists()


def test_tasks_on_the_keys_own_channel_are_not_counted_twice_but_obey_per_task(funded, echo):
    key_register(user_id=funded.pk, public_key=public(KEY))
    key, robot = keyed(funded, limits={"per_task": 60_000, "total": 500_000})
    channel = open_channel(robot, 500_000).json()["id"]

    too_big = pay_by_channel(robot, channel, 1, 70_000, 70_000)
    assert error(too_big) == (402, "spend_limit_exceeded")
    task_id = pay_by_channel(robot, channel, 2, 50_000, 50_000).json()["id"]

    assert spent(key) == (500_000,) * 3
    settle(task_id)
    assert spent(key) == (500_000,) * 3  # the refund stays in the channel


def test_tasks_on_a_channel_the_key_did_not_open_count_like_escrow_tasks(funded, echo, as_alice):
    key_register(user_id=funded.pk, public_key=public(KEY))
    channel = as_alice.post(CHANNELS, {"agent": "echo", "deposit": 500_000}, format="json").json()[
        "id"
    ]
    key, robot = keyed(funded, limits={"total": 80_000})

    task_id = pay_by_channel(robot, channel, 1, 50_000, 50_000).json()["id"]
    assert spent(key) == (50_000,) * 3
    assert error(pay_by_channel(robot, channel, 2, 100_000, 50_000)) == (
        402,
        "spend_limit_exceeded",
    )

    settle(task_id)
    assert spent(key) == (COST,) * 3


def test_a_settled_channel_gives_back_what_came_back_to_the_wallet(funded, echo, as_alice):
    key_register(user_id=funded.pk, public_key=public(KEY))
    key, robot = keyed(funded, limits={"total": 500_000})
    channel = open_channel(robot, 500_000).json()["id"]
    settle(pay_by_channel(robot, channel, 1, 50_000, 50_000).json()["id"])
    assert error(open_channel(robot, 1)) == (402, "spend_limit_exceeded")

    closed = channel_close(channel_id=channel, by_user_id=funded.pk)

    assert closed.status == PaymentChannel.Status.SETTLED
    # The key's own view of it (through the API) gives back deposit − redeemed at once.
    detail = as_alice.get(f"/api/v1/api-keys/{key.pk}/").json()
    assert detail["spent"] == {"daily": COST, "monthly": COST, "total": COST}
    charge = ApiKeyCharge.objects.get(channel_id=channel)
    assert (charge.given_back, charge.settled_at is not None) == (500_000 - COST, True)
    assert open_channel(robot, 500_000 - COST).status_code == 201


def test_a_settled_channel_gives_back_at_the_next_submission_too(funded, echo):
    key_register(user_id=funded.pk, public_key=public(KEY))
    key, robot = keyed(funded, limits={"total": 500_000})
    channel = open_channel(robot, 500_000).json()["id"]
    channel_close(channel_id=channel, by_user_id=funded.pk)

    assert submit(robot, budget=BUDGET).status_code == 201

    assert spent(key) == (BUDGET,) * 3


def test_closing_an_open_channel_with_tasks_in_flight_gives_back_once_it_settles(funded, echo):
    key_register(user_id=funded.pk, public_key=public(KEY))
    key, robot = keyed(funded)
    channel = open_channel(robot, 200_000).json()["id"]
    task_id = pay_by_channel(robot, channel, 1, 50_000, 50_000).json()["id"]
    channel_close(channel_id=channel, by_user_id=funded.pk)

    assert submit(robot, budget=2_000).status_code == 201  # the channel is still closing
    assert spent(key)[2] == 202_000

    settle(task_id)  # the last task: the channel settles with it
    assert PaymentChannel.objects.get(pk=channel).status == PaymentChannel.Status.SETTLED
    assert submit(robot, budget=2_000).status_code == 201
    assert spent(key)[2] == COST + 4_000


def test_the_key_list_reports_spending_and_remaining(funded, echo, as_alice):
    key, robot = keyed(funded, limits={"daily": 300_000})
    submit(robot)

    listed = as_alice.get("/api/v1/api-keys/").json()["results"][0]

    assert listed["spent"] == {"daily": BUDGET, "monthly": BUDGET, "total": BUDGET}
    assert listed["remaining"] == {"daily": 200_000, "monthly": None, "total": None}
    assert timezone.now() - timedelta(minutes=1) < key.created_at
