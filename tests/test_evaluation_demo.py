"""The demo's evaluated tasks (SPEC §21), run by the real sample evaluators: countcheck
accepts wordcount's count, schemacheck accepts wordstats' output against its contract, and
countcheck rejects echo's output, which is no word count (its cost refunded)."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from escrow.models import Earning
from marketplace.models import Evaluation

pytestmark = pytest.mark.slow


def test_the_demo_runs_evaluated_tasks_with_the_sample_evaluators(db, demo_settings, capsys):
    call_command("load_demo")
    verdicts = {
        (e.task.agent.slug, e.evaluator.slug): (e.verdict, e.score, e.reason)
        for e in Evaluation.objects.select_related("task__agent", "evaluator")
    }
    assert set(verdicts) == {
        ("wordcount", "countcheck"),
        ("wordstats", "schemacheck"),
        ("echo", "countcheck"),
    }
    print(verdicts)
    assert verdicts[("wordcount", "countcheck")][0] == "accept"
    assert verdicts[("wordstats", "schemacheck")][0] == "accept"
    assert verdicts[("echo", "countcheck")][0] == "reject"
    rejected = Evaluation.objects.get(task__agent__slug="echo")
    assert Earning.objects.get(task=rejected.task).status == "refunded"
    call_command("load_demo")  # again: nothing more is run
    assert Evaluation.objects.count() == 3
