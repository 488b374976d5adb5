from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escrow import errors
from escrow.channels import (
    channel_close,
    channel_open,
    channels_settle_due,
    custodial_key,
    key_register,
    voucher_sign_custodial,
)
from escrow.errors import InsufficientFunds
from escrow.models import Account, PaymentChannel, Transfer, Voucher
from escrow.services import deposit_create, system_balance
from execution.services import Execution, task_claim, task_settle
from marketplace.models import Agent, Task
from marketplace.services import task_cancel, task_submit
from tests.factories import KEY, AgentBinaryFactory, AgentFactory, held_for, public, sign

OTHER_KEY = Ed25519PrivateKey.generate()


def balance(user) -> int:
    return Account.objects.get(user=user).balance


@pytest.fixture
def channel(alice, agent, bob):
    deposit_create(user_id=alice.pk, amount=10_000_000)
    key_register(user_id=alice.pk, public_key=public(KEY))
    return channel_open(
        requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=1_000_000
    )


def submit(alice, agent, channel, voucher, budget=100_000) -> Task:
    return task_submit(
        requester=alice,
        agent=agent,
        input="hi",
        budget=budget,
        payment="channel",
        channel=str(channel.pk),
        voucher=voucher,
    )


def state(channel) -> tuple[int, int, int, int, int]:
    channel.refresh_from_db()
    return (
        channel.nonce,
        channel.authorized,
        channel.redeemed,
        channel.reserved,
        channel.in_flight,
    )


def test_opening_moves_the_deposit_into_the_channels_account(channel, alice):
    assert balance(alice) == 9_000_000
    assert system_balance("channels") == 1_000_000
    assert (channel.status, channel.deposit, channel.redeemed) == ("open", 1_000_000, 0)


def test_opening_is_idempotent_and_needs_the_money(alice, agent, bob):
    deposit_create(user_id=alice.pk, amount=500)
    first = channel_open(
        requester_user_id=alice.pk,
        agent_id=agent.pk,
        payee_user_id=bob.pk,
        deposit=400,
        idempotency_key="k",
    )
    again = channel_open(
        requester_user_id=alice.pk,
        agent_id=agent.pk,
        payee_user_id=bob.pk,
        deposit=400,
        idempotency_key="k",
    )
    assert again.pk == first.pk and balance(alice) == 100
    with pytest.raises(errors.IdempotencyConflict):
        channel_open(
            requester_user_id=alice.pk,
            agent_id=agent.pk,
            payee_user_id=bob.pk,
            deposit=401,
            idempotency_key="k",
        )
    with pytest.raises(InsufficientFunds):
        channel_open(
            requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=101
        )
    assert PaymentChannel.objects.count() == 1


def test_a_channel_task_reserves_its_budget_and_redeems_only_its_cost(channel, alice, agent, bob):
    task = submit(alice, agent, channel, sign(channel.pk, 1, 100_000))
    assert state(channel) == (1, 100_000, 0, 100_000, 1)
    assert Voucher.objects.get(channel=channel).task_id == task.pk
    transfers = Transfer.objects.count()

    task_claim(task_id=task.pk)
    run = Execution(
        exit_code=0, stdout=b"ok", fuel_used=500_000, fuel_limit=49_500_000, elapsed_ms=4
    )
    assert task_settle(task_id=task.pk, attempt=1, execution=run)

    # cost = 1_000 + ceil(500_000 × 2_000 / 1e6) = 2_000, fee 100; no ledger transfer per task
    task.refresh_from_db()
    assert (task.status, task.cost, task.fee, task.refund) == ("succeeded", 2_000, 100, 98_000)
    assert state(channel) == (1, 100_000, 2_000, 0, 0)
    assert channel.fees == 100
    assert Transfer.objects.count() == transfers
    assert task.escrow.status == "completed"


def test_a_failed_or_cancelled_channel_task_redeems_nothing(channel, alice, agent):
    failed = submit(alice, agent, channel, sign(channel.pk, 1, 100_000))
    task_claim(task_id=failed.pk)
    task_settle(task_id=failed.pk, attempt=1, execution=Execution(reason="trap"))
    cancelled = submit(alice, agent, channel, sign(channel.pk, 2, 100_000))
    task_cancel(task=cancelled)
    assert state(channel) == (2, 100_000, 0, 0, 0)
    assert {failed.escrow.status, cancelled.escrow.status} == {"cancelled"}


@pytest.mark.parametrize(
    ("voucher", "error"),
    [
        (lambda c: sign(c.pk, 1, 2_000_000), errors.VoucherExceedsDeposit),
        (lambda c: sign(c.pk, 1, 99_999), errors.VoucherInsufficient),
        (lambda c: sign(c.pk, 1, 100_000, OTHER_KEY), errors.VoucherBadSignature),
        (lambda c: sign("another-channel", 1, 100_000), errors.VoucherBadSignature),
        (lambda c: {**sign(c.pk, 1, 100_000), "signature": "***"}, errors.VoucherBadSignature),
        (
            lambda c: {"nonce": "1", "cumulative_amount": 100_000, "signature": ""},
            errors.VoucherMalformed,
        ),
        (
            lambda c: {"nonce": 0, "cumulative_amount": 100_000, "signature": ""},
            errors.VoucherMalformed,
        ),
        (lambda c: [], errors.VoucherMalformed),
    ],
)
def test_bad_vouchers_are_refused_and_change_nothing(channel, alice, agent, voucher, error):
    with pytest.raises(error):
        submit(alice, agent, channel, voucher(channel))
    assert state(channel) == (0, 0, 0, 0, 0)
    assert (Task.objects.count(), Voucher.objects.count()) == (0, 0)
    assert balance(alice) == 9_000_000


def test_replayed_and_stale_nonces_are_refused(channel, alice, agent):
    first = sign(channel.pk, 5, 100_000)
    submit(alice, agent, channel, first)
    with pytest.raises(errors.VoucherReplayed):
        submit(alice, agent, channel, sign(channel.pk, 5, 200_000))
    with pytest.raises(errors.VoucherStale):
        submit(alice, agent, channel, sign(channel.pk, 4, 200_000))
    assert state(channel) == (5, 100_000, 0, 100_000, 1)
    submit(alice, agent, channel, sign(channel.pk, 6, 200_000))
    assert state(channel) == (6, 200_000, 0, 200_000, 2)


def test_a_voucher_for_another_channel_is_refused(channel, alice, agent, bob):
    other = channel_open(
        requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=1_000_000
    )
    with pytest.raises(errors.VoucherBadSignature):
        submit(alice, agent, channel, sign(other.pk, 1, 100_000))
    assert state(channel) == (0, 0, 0, 0, 0)


def test_only_the_channels_requester_and_agent_can_use_it(channel, alice, agent, bob, charlie):
    deposit_create(user_id=charlie.pk, amount=1_000_000)
    key_register(user_id=charlie.pk, public_key=public(KEY))
    with pytest.raises(errors.ChannelNotFound):
        submit(charlie, agent, channel, sign(channel.pk, 1, 100_000))
    other_agent = AgentFactory.create(owner=bob)
    Agent.objects.filter(pk=other_agent.pk).update(
        current_binary=AgentBinaryFactory.create(agent=other_agent)
    )
    other_agent.refresh_from_db()
    with pytest.raises(errors.ChannelAgentMismatch):
        submit(alice, other_agent, channel, sign(channel.pk, 1, 100_000))
    with pytest.raises(errors.ChannelNotFound):
        channel_close(channel_id=channel.pk, by_user_id=charlie.pk)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_single_field_mutation_of_a_valid_voucher_is_refused(channel, alice, agent, data):
    valid = sign(channel.pk, 1, 100_000)
    field = data.draw(st.sampled_from(["nonce", "cumulative_amount", "signature"]))
    if field == "signature":
        raw = bytearray(base64.b64decode(valid["signature"]))
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] ^= data.draw(st.integers(1, 255))
        mutated = {**valid, "signature": base64.b64encode(bytes(raw)).decode()}
    else:
        value = data.draw(st.integers(1, 2**62).filter(lambda v: v != valid[field]))
        mutated = {**valid, field: value}
    with pytest.raises(errors.VoucherError):
        submit(alice, agent, channel, mutated)
    assert state(channel) == (0, 0, 0, 0, 0)


def test_closing_an_idle_channel_settles_exact_amounts_at_once(channel, alice, agent, bob):
    for nonce in (1, 2):
        task = submit(alice, agent, channel, sign(channel.pk, nonce, 100_000 * nonce))
        task_claim(task_id=task.pk)
        run = Execution(exit_code=0, fuel_used=1_234_567, fuel_limit=10**8, elapsed_ms=3)
        task_settle(task_id=task.pk, attempt=1, execution=run)
    # each task: cost = 1_000 + ceil(1_234_567 × 2_000 / 1e6) = 1_000 + 2_470 = 3_470, fee 173
    channel = channel_close(channel_id=channel.pk, by_user_id=alice.pk)
    assert (channel.status, channel.redeemed, channel.fees) == ("settled", 6_940, 346)
    assert (balance(bob), held_for(bob)) == (0, 6_940 - 346)  # the owner's share is held
    assert balance(alice) == 10_000_000 - 6_940
    assert system_balance("platform_fees") == 346
    assert system_balance("channels") == 0
    with pytest.raises(errors.ChannelNotOpen):
        channel_close(channel_id=channel.pk, by_user_id=bob.pk)


def test_a_closing_channel_takes_no_new_tasks_and_settles_when_the_last_one_ends(
    channel, alice, agent, bob
):
    task = submit(alice, agent, channel, sign(channel.pk, 1, 100_000))
    channel = channel_close(channel_id=channel.pk, by_user_id=bob.pk)  # the owner may close too
    assert (channel.status, channel.closes_at) == ("closing", None)
    with pytest.raises(errors.ChannelNotOpen):
        submit(alice, agent, channel, sign(channel.pk, 2, 200_000))
    task_claim(task_id=task.pk)
    task_settle(
        task_id=task.pk,
        attempt=1,
        execution=Execution(exit_code=0, fuel_used=0, fuel_limit=10, elapsed_ms=1),
    )
    channel.refresh_from_db()
    assert (channel.status, channel.redeemed) == ("settled", 1_000)
    assert (balance(bob), held_for(bob)) == (0, 1_000 - 50)
    assert balance(alice) == 10_000_000 - 1_000


def test_the_challenge_period_delays_settlement(channel, alice, bob, settings):
    settings.CHANNEL_CHALLENGE_SECONDS = 3600
    channel = channel_close(channel_id=channel.pk, by_user_id=alice.pk)
    assert channel.status == "closing"
    assert channels_settle_due() == {"expired": 0, "settled": 0}
    PaymentChannel.objects.filter(pk=channel.pk).update(
        closes_at=timezone.now() - timedelta(seconds=1)
    )
    assert channels_settle_due() == {"expired": 0, "settled": 1}
    assert balance(alice) == 10_000_000


def test_an_expired_channel_refuses_tasks_and_settles(channel, alice, agent):
    PaymentChannel.objects.filter(pk=channel.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    with pytest.raises(errors.ChannelExpired):
        submit(alice, agent, channel, sign(channel.pk, 1, 100_000))
    assert channels_settle_due() == {"expired": 1, "settled": 1}
    channel.refresh_from_db()
    assert channel.status == "settled"
    assert balance(alice) == 10_000_000


def test_a_custodial_key_signs_browser_vouchers(alice, agent, bob):
    deposit_create(user_id=alice.pk, amount=1_000_000)
    channel = channel_open(
        requester_user_id=alice.pk, agent_id=agent.pk, payee_user_id=bob.pk, deposit=500_000
    )
    assert custodial_key(user_id=alice.pk).pk == custodial_key(user_id=alice.pk).pk
    for _ in range(2):
        voucher = voucher_sign_custodial(user_id=alice.pk, channel_id=channel.pk, budget=100_000)
        submit(alice, agent, channel, voucher.as_dict())
    assert state(channel) == (2, 200_000, 0, 200_000, 2)


def test_registering_a_bad_public_key_is_refused(alice):
    for bad in ["", "not base64", base64.b64encode(b"short").decode(), 42]:
        with pytest.raises(errors.InvalidPublicKey):
            key_register(user_id=alice.pk, public_key=bad)


def test_cancelling_the_last_task_of_a_closing_channel_settles_it(channel, alice, agent, bob):
    task = submit(alice, agent, channel, sign(channel.pk, 1, 100_000))
    assert channel_close(channel_id=channel.pk, by_user_id=alice.pk).status == "closing"
    task_cancel(task=task)
    channel.refresh_from_db()
    assert (channel.status, channel.redeemed, channel.in_flight) == ("settled", 0, 0)
    assert balance(alice) == 10_000_000
    assert balance(bob) == 0
