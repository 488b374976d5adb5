"""Existing events get what the audit's replay now reads: the requester of their task, the
UTC day they were scored on, and the share that counted (all of a scored outcome, none of a
neutral one). They carry no daily cap (none was in force) and no neutral reason. Scores get
their weighted evidence (the plain counts) and the number of requesters they rest on."""

import datetime

from django.db import migrations
from django.db.models import Count, F, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, TruncDate


def backfill(apps, schema_editor):
    Task = apps.get_model("marketplace", "Task")
    ReputationEvent = apps.get_model("reputation", "ReputationEvent")
    AgentReputation = apps.get_model("reputation", "AgentReputation")
    requester = Task.objects.filter(pk=OuterRef("task_id")).values("requester_id")[:1]
    ReputationEvent.objects.filter(task__isnull=False).update(requester_id=Subquery(requester))
    ReputationEvent.objects.update(settled_on=TruncDate("created_at", tzinfo=datetime.UTC))
    ReputationEvent.objects.filter(outcome="neutral").update(weight=0)
    scored_by = (
        ReputationEvent.objects.filter(agent_id=OuterRef("agent_id"), requester__isnull=False)
        .exclude(outcome="neutral")
        .order_by()
        .values("agent_id")
        .annotate(count=Count("requester_id", distinct=True))
        .values("count")
    )
    AgentReputation.objects.update(
        evidence_successes=F("successes"),
        evidence_failures=F("failures"),
        requesters=Coalesce(Subquery(scored_by), Value(0)),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("reputation", "0002_event_requester_and_cap"),
        ("marketplace", "0007_pin_recommended_limits"),
    ]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
