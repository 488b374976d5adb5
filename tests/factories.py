from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import factory
import wasmtime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings
from django.contrib.auth.models import User

from escrow.channels import channel_open, key_register, voucher_message
from escrow.models import Account, Earning, PaymentChannel
from escrow.services import deposit_create
from execution.runs import Execution
from execution.services import task_claim, task_settle
from marketplace.binaries import binary_upload
from marketplace.models import Agent, AgentBinary, Task
from marketplace.services import agent_create, task_submit, user_create


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User

    username = factory.Sequence(lambda n: f"user{n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return user_create(username=kwargs["username"], password=kwargs.get("password"))


class AgentFactory(factory.django.DjangoModelFactory[Agent]):
    class Meta:
        model = Agent

    owner = factory.SubFactory(UserFactory)
    slug = factory.Sequence(lambda n: f"agent-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())
    base_fee = 1_000
    fuel_price = 10

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return agent_create(**kwargs)


class AgentBinaryFactory(factory.django.DjangoModelFactory[AgentBinary]):
    """A binary row without stored bytes: for tests of the money and state rules."""

    class Meta:
        model = AgentBinary

    agent = factory.SubFactory(AgentFactory)
    version = factory.Sequence(lambda n: n + 1)
    sha256 = factory.LazyAttribute(lambda o: hashlib.sha256(f"{o.version}".encode()).hexdigest())
    size = 8
    storage_name = factory.LazyAttribute(lambda o: f"wasm/{o.sha256[:2]}/{o.sha256}.wasm")
    # As an upload naming no contract: the agent's output schema, no input schema.
    output_schema = factory.LazyAttribute(lambda o: o.agent.output_schema)


class TaskFactory(factory.django.DjangoModelFactory[Task]):
    class Meta:
        model = Task

    requester = factory.SubFactory(UserFactory)
    binary = factory.SubFactory(AgentBinaryFactory)
    agent = factory.LazyAttribute(lambda o: o.binary.agent)
    input = "hello"
    budget = 100_000
    fuel_limit = settings.TASK_DEFAULT_FUEL
    memory_limit_mb = settings.TASK_DEFAULT_MEMORY_MB
    timeout_ms = settings.TASK_DEFAULT_TIMEOUT_MS
    min_reputation = settings.DEFAULT_MIN_REPUTATION


# The smallest WASI command the validator accepts: `_start` and `memory`, no imports.
MINIMAL_WASM = bytes(
    wasmtime.wat2wasm('(module (memory (export "memory") 1) (func (export "_start")))')
)

ECHO_WASM = Path(__file__).resolve().parent.parent / "agents" / "dist" / "echo.wasm"


def balance(user: Any) -> int:
    return Account.objects.get(user=user).balance


def held_for(user: Any) -> int:
    """µCR of the user's agents' earnings still held (not yet released to the wallet)."""
    return sum(
        Earning.objects.filter(wallet__user=user, status__in=Earning.UNRELEASED).values_list(
            "amount", flat=True
        )
    )


def make_agent(owner: Any, *, slug: str = "echo", with_binary: bool = True, **kwargs: Any) -> Agent:
    """An agent whose current binary is a row without stored bytes (for money and state)."""
    kwargs.setdefault("base_fee", 1_000)
    kwargs.setdefault("fuel_price", 2_000)
    agent = AgentFactory.create(owner=owner, slug=slug, **kwargs)
    if with_binary:
        binary = AgentBinaryFactory.create(agent=agent)
        Agent.objects.filter(pk=agent.pk).update(current_binary=binary)
        agent.refresh_from_db()
    return agent


def echo_world() -> tuple[User, Agent]:
    """alice with 10 CR, and bob's agent `echo` on the real echo binary (1,000 µCR a run,
    1,000 µCR per million fuel): for tests that run tasks on real workers."""
    alice, bob = UserFactory.create(username="alice"), UserFactory.create(username="bob")
    deposit_create(user_id=alice.pk, amount=10_000_000)
    agent = AgentFactory.create(owner=bob, slug="echo", base_fee=1_000, fuel_price=1_000)
    binary_upload(agent=agent, data=ECHO_WASM.read_bytes())
    agent.refresh_from_db()
    return alice, agent


# A run of `make_agent`'s agent that succeeded: cost = base fee 1_000 + ⌈1_234_567 fuel ×
# 2_000 µCR / 10⁶⌉ = 3_470, of which the fee (5 %) is 173 and the owner's share the rest.
RUN = Execution(exit_code=0, fuel_used=1_234_567, fuel_limit=10**8, elapsed_ms=3)
SHARE, FEE = 3_470 - 173, 173


def settled(requester: Any, agent: Agent, execution: Execution = RUN, **options: Any) -> Task:
    """A task submitted (budget 0.1 CR), claimed and settled with `execution`: by default
    a succeeded task whose owner's share is held as earnings, while holds are on."""
    task = task_submit(requester=requester, agent=agent, input="hi", budget=100_000, **options)
    task_claim(task_id=task.pk)
    task_settle(task_id=task.pk, attempt=1, execution=execution)
    return Task.objects.get(pk=task.pk)


# --- payment channels --------------------------------------------------------------------

# The requester's voucher key in channel tests (registered with `public(KEY)`).
KEY = Ed25519PrivateKey.generate()


def public(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def sign(channel_id: Any, nonce: int, amount: int, key: Ed25519PrivateKey = KEY) -> dict:
    """A voucher for the channel: `amount` in all up to this `nonce`, signed with `key`."""
    signature = key.sign(voucher_message(channel_id, nonce, amount))
    return {
        "nonce": nonce,
        "cumulative_amount": amount,
        "signature": base64.b64encode(signature).decode(),
    }


def channel_opened(
    requester: Any, agent: Agent, payee: Any, *, deposit: int = 1_000_000
) -> PaymentChannel:
    """A channel from the requester, whose voucher key is KEY, to the agent's owner."""
    key_register(user_id=requester.pk, public_key=public(KEY))
    return channel_open(
        requester_user_id=requester.pk, agent_id=agent.pk, payee_user_id=payee.pk, deposit=deposit
    )


def paid_by(channel: Any, nonce: int, amount: int) -> dict[str, Any]:
    """A submission's options to pay through the channel: a voucher for `amount` in all."""
    return {
        "payment": "channel",
        "channel": str(channel.pk),
        "voucher": sign(channel.pk, nonce, amount),
    }


def channel_tasks(requester: Any, agent: Agent, channel: Any, count: int = 2) -> list[Task]:
    """`count` tasks paid through the open channel (0.1 CR more on each voucher), settled
    as `settled` does."""
    return [
        settled(requester, agent, **paid_by(channel, nonce, 100_000 * nonce))
        for nonce in range(1, count + 1)
    ]
