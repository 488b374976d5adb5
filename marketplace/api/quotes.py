"""Quotes: what a task on an agent is likely to cost, for anybody signed in (and any API
key: a program deciding what to spend needs it most)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.decorators import api_view
from rest_framework.request import Request
from rest_framework.response import Response

from marketplace import selectors
from marketplace.api import schema_webhooks as schema
from marketplace.api.auth_keys import ANY_KEY, key_scope
from marketplace.api.common import valid
from marketplace.api.serializers.quotes import QuoteQuerySerializer, QuoteSerializer
from marketplace.errors import AgentNotFound
from marketplace.quotes import quote_for


@key_scope(GET=ANY_KEY)
@extend_schema(**schema.AGENT_QUOTE)
@api_view(["GET"])
def agent_quote(request: Request, slug: str) -> Response:
    agent = selectors.agent_by_slug(slug, missing=AgentNotFound)
    query = valid(QuoteQuerySerializer, request.query_params)
    quote = quote_for(agent, input_bytes=query["input_bytes"], fuel_limit=query.get("fuel_limit"))
    return Response(QuoteSerializer(quote).data)
