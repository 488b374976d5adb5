from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from escrow.services import wallet_open
from marketplace.models import Agent
from reputation.services import reputation_open


def user_create(*, username: str, password: str | None = None) -> User:
    """A user with an open wallet."""
    with transaction.atomic():
        user = User.objects.create_user(username=username, password=password)
        wallet_open(user_id=user.pk)
        return user


def agent_create(
    *,
    owner: User,
    slug: str,
    name: str,
    base_fee: int,
    fuel_price: int,
    description: str = "",
    tags: list[str] | None = None,
    output_schema: dict | None = None,
) -> Agent:
    with transaction.atomic():
        agent = Agent(
            owner=owner,
            slug=slug,
            name=name,
            description=description,
            tags=" ".join(tags or []),
            base_fee=base_fee,
            fuel_price=fuel_price,
            output_schema=output_schema,
        )
        agent.full_clean(exclude=["current_binary"])
        agent.save()
        wallet_open(user_id=owner.pk)
        reputation_open(agent_id=agent.pk)
        return agent
