"""The browser forms' parts for evaluated settlement (SPEC §21): the evaluator a task names,
and the evaluators an agent accepts. Mixed into TaskForm and AgentForm."""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError

from marketplace.agent_forms import AgentLimitsForm
from marketplace.evaluators import MAX_EVALUATORS

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class EvaluatorForm(forms.Form):
    evaluator = forms.RegexField(
        label="Evaluator",
        regex=SLUG.pattern,
        required=False,
        max_length=64,
        help_text="Optional: an evaluator the agent accepts (its slug). It checks the output "
        "before the agent is paid, from this budget; a rejection refunds the task's cost.",
        error_messages={"invalid": "An agent's slug: lowercase letters, digits, - and _."},
    )

    def clean_evaluator(self) -> str | None:
        return self.cleaned_data.get("evaluator") or None


class AcceptedEvaluatorsForm(forms.Form):
    accepted_evaluators = forms.CharField(
        label="Accepted evaluators",
        required=False,
        max_length=2000,
        help_text="Slugs of the evaluator agents whose verdict you accept, separated by "
        "spaces or commas. A task may name one of them to check the output before you are "
        "paid.",
    )

    def clean_accepted_evaluators(self) -> list[str]:
        text = self.cleaned_data.get("accepted_evaluators") or ""
        slugs = list(dict.fromkeys(part for part in re.split(r"[\s,]+", text) if part))
        for slug in slugs:
            if not SLUG.fullmatch(slug):
                raise ValidationError(f"“{slug}” is not an agent's slug.")
        if len(slugs) > MAX_EVALUATORS:
            raise ValidationError(f"At most {MAX_EVALUATORS} evaluators.")
        return slugs


class AgentSettingsForm(AgentLimitsForm, AcceptedEvaluatorsForm):
    """What an owner changes on the agent's page: its recommended limits and the evaluators
    it accepts."""
