"""The home page: the wallet summary, recent tasks (live), disputes to answer or watch, and
the user's own agents with their earnings chart."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from marketplace import selectors
from marketplace.models import Agent
from marketplace.selectors.earnings import earnings_chart
from marketplace.views.common import (
    POLL_ACTIVE,
    POLL_IDLE,
    HtmxHttpRequest,
    login_required,
    render_page,
    user_of,
)
from marketplace.views.disputes import opened_context, received_context

DASHBOARD_TASKS = 8


def _dashboard_context(user: User) -> dict[str, Any]:
    recent = list(selectors.tasks_of(user)[:DASHBOARD_TASKS])
    active = selectors.has_active_tasks(recent)
    summary = selectors.wallet_summary(user)
    return {
        "summary": summary,
        # Pending earnings are an owner's figure: shown to those who have agents or some.
        "show_pending": bool(summary.pending_earnings) or Agent.objects.filter(owner=user).exists(),
        "recent_tasks": recent,
        "poll": POLL_ACTIVE if active else POLL_IDLE,
        "task_count": selectors.tasks_of(user).count(),
    }


@require_GET
@login_required
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    user = user_of(request)
    context = _dashboard_context(user)
    if not request.htmx:
        # The poll refreshes only the live part; the agents need not be queried for it.
        agents = list(selectors.agents_of(user))
        context.update(
            {
                "my_agents": agents,
                "earnings": sum(agent.earned for agent in agents),  # type: ignore[attr-defined]
                "earnings_chart": earnings_chart(user) if agents else None,
                **received_context(user),
                **opened_context(user),
            }
        )
    return render_page(request, "dashboard.html", context, fragment="live")
