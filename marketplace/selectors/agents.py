"""Reads of agents. Agents are a catalogue every signed-in user can read; only the owner
manages one."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import (
    BigIntegerField,
    Count,
    F,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce

from escrow.models import Account, Transfer
from marketplace.models import Agent, AgentBinary, Task
from marketplace.selectors.access import NO_SUCH_AGENT, Refusal
from reputation.models import INITIAL_SCORE, AgentReputation, ReputationEvent

Kind = Transfer.Kind


def agents_annotated() -> QuerySet[Agent]:
    """Agents with what a listing shows: owner, current binary, `score` and `requesters`
    (how many distinct requesters the score rests on).

    Every agent gets its reputation row when it is created; one without (older data) is
    scored as a new agent would be.
    """
    return Agent.objects.select_related("owner", "current_binary").annotate(
        score=Coalesce(F("reputation__score"), Value(INITIAL_SCORE)),
        requesters=Coalesce(F("reputation__requesters"), Value(0)),
    )


def agent_catalogue(
    *,
    query: str = "",
    order_by: tuple[str, ...] = ("-score", "slug"),
    owner: Any = None,
    tag: str | None = None,
    status: str | None = None,
) -> QuerySet[Agent]:
    """The catalogue, searched by words (`query`), or narrowed to one tag or status."""
    listing = agents_annotated()
    if owner is not None:
        listing = listing.filter(owner=owner)
    for word in query.split():
        listing = listing.filter(
            Q(name__icontains=word)
            | Q(slug__icontains=word)
            | Q(description__icontains=word)
            | Q(tags__icontains=word)
            | Q(owner__username__iexact=word)
        )
    if tag is not None:
        # Tags are validated to [a-z0-9-], so they are safe inside the pattern.
        listing = listing.filter(tags__regex=rf"(^| ){tag}( |$)")
    if status is not None:
        listing = listing.filter(status=status)
    return listing.order_by(*order_by)


def agent_by_slug(slug: str, *, missing: Refusal = NO_SUCH_AGENT) -> Agent:
    agent = agents_annotated().filter(slug=slug).first()
    if agent is None:
        raise missing()
    return agent


def agent_owned_by(
    user: Any,
    slug: str,
    *,
    missing: Refusal = NO_SUCH_AGENT,
    not_owner: Refusal | None = None,
) -> Agent:
    """The agent, if `user` owns it.

    For someone else's agent the pages answer the same 404 as for a missing one (the
    default); the API, whose catalogue anyone may read, passes `not_owner` to say 403.
    """
    agent = agent_by_slug(slug, missing=missing)
    if agent.owner_id != user.pk:
        raise (not_owner or missing)()
    return agent


def agent_versions(agent: Agent) -> QuerySet[AgentBinary]:
    """Every binary version of the agent with its contract, newest first."""
    return AgentBinary.objects.filter(agent=agent).order_by("-version")


def _earnings(agent_filter: str, agent: Any) -> Q:
    """What an agent's owner was paid: per task from escrow, per channel at settlement."""
    return Q(kind=Kind.ESCROW_PAYOUT, **{f"task__{agent_filter}": agent}) | Q(
        kind=Kind.CHANNEL_PAYOUT, **{f"channel__{agent_filter}": agent}
    )


def _sum(transfers: QuerySet[Transfer]) -> Subquery:
    # SUM as a plain function: one row for the whole filtered set, no GROUP BY.
    total = Func(F("amount"), function="SUM", output_field=BigIntegerField())
    return Subquery(transfers.order_by().annotate(total=total).values("total")[:1])


def agent_earnings(agent: Agent) -> int:
    total = Transfer.objects.filter(_earnings("agent", agent)).aggregate(total=Sum("amount"))
    return total["total"] or 0


def agents_of(user: Any) -> QuerySet[Agent]:
    """The user's own agents, with their earnings and number of tasks."""
    return (
        agents_annotated()
        .filter(owner=user)
        .annotate(
            earned=Coalesce(
                _sum(Transfer.objects.filter(_earnings("agent", OuterRef("pk")))),
                Value(0),
                output_field=BigIntegerField(),
            ),
            runs=Count("tasks"),
        )
        .order_by("name")
    )


def owner_earnings(user: Any) -> int:
    total = Transfer.objects.filter(_earnings("agent__owner", user)).aggregate(total=Sum("amount"))
    return total["total"] or 0


@dataclass(frozen=True)
class AgentStats:
    successes: int
    failures: int
    neutral: int
    tasks: int
    requesters: int = 0

    @property
    def scored(self) -> int:
        return self.successes + self.failures

    @property
    def success_rate(self) -> Decimal | None:
        """Successes among the runs the agent is answerable for (not platform faults)."""
        if not self.scored:
            return None
        return Decimal(100 * self.successes) / Decimal(self.scored)


def agent_stats(agent: Agent) -> AgentStats:
    standing = AgentReputation.objects.filter(agent=agent).first()
    return AgentStats(
        successes=standing.successes if standing else 0,
        failures=standing.failures if standing else 0,
        neutral=standing.neutral if standing else 0,
        tasks=Task.objects.filter(agent=agent).count(),
        requesters=standing.requesters if standing else 0,
    )


@dataclass(frozen=True)
class Standing:
    """An agent's reputation with its latest events, newest first."""

    score: Decimal
    successes: int
    failures: int
    neutral: int
    events: list[ReputationEvent]
    requesters: int = 0


def agent_standing(agent: Agent, *, events: int) -> Standing:
    """The agent's reputation and its latest `events`; a new agent's when it has no row."""
    standing = AgentReputation.objects.filter(agent=agent).first()
    latest = ReputationEvent.objects.filter(agent=agent).order_by("-id")[:events]
    return Standing(
        score=standing.score if standing else INITIAL_SCORE,
        successes=standing.successes if standing else 0,
        failures=standing.failures if standing else 0,
        neutral=standing.neutral if standing else 0,
        events=list(latest),
        requesters=standing.requesters if standing else 0,
    )


def agent_recent_tasks(agent: Agent, *, limit: int = 10) -> list[Task]:
    """The agent's latest runs, without anybody's input or output."""
    return list(
        Task.objects.filter(agent=agent)
        .only(
            "id",
            "requester_id",
            "status",
            "failure_reason",
            "cost",
            "fuel_used",
            "elapsed_ms",
            "created_at",
        )
        .order_by("-created_at")[:limit]
    )


def agents_with_wallets(*, requester_id: int) -> QuerySet[Agent]:
    """Agents, each with its current version (and its contract), its owner's wallet id
    (`owner_wallet`) and the requester's (`requester_wallet`): what a submission reads of
    its agent, in one statement."""
    return Agent.objects.select_related("current_binary").annotate(
        owner_wallet=_wallet_of(OuterRef("owner_id")), requester_wallet=_wallet_of(requester_id)
    )


def agent_for_submission(*, requester_id: int, slug: str) -> Agent | None:
    """The agent a submission names, read once with the wallets `task_submit` needs: an
    API request reads it to validate its input and hands this very row to the service,
    which then does not read it again (`wallets_for`)."""
    agent = agents_with_wallets(requester_id=requester_id).filter(slug=slug).first()
    if agent is not None:
        agent.wallets_for = requester_id  # type: ignore[attr-defined]
    return agent


def _wallet_of(user: Any) -> Subquery:
    wallets = Account.objects.filter(kind=Account.Kind.WALLET, user_id=user)
    return Subquery(wallets.values("pk")[:1])
