"""What every resource module of the API shares: input validation, paged responses, the
caller, the login throttle and the browsable docs page."""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.models import User
from django.db.models import QuerySet
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

from marketplace.api.pagination import Pagination


class AuthRateThrottle(SimpleRateThrottle):
    """Registration and login, per client address: slows down password guessing."""

    scope = "auth"

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class DocsView(SpectacularSwaggerView):
    """The browsable API page. It renders HTML; its errors are still the JSON envelope."""

    http_method_names = ["get", "head"]

    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return response


def valid(serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any) -> Any:
    """The validated data, or a 400 `validation_error` naming the fields at fault."""
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def page_response(
    request: Request,
    queryset: QuerySet,
    serializer_class: type[serializers.Serializer],
    **kwargs: Any,
) -> Response:
    """One page of `queryset` (`page`, `page_size` from the query) with its neighbours."""
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request)
    return paginator.get_paginated_response(serializer_class(page, many=True, **kwargs).data)


def current_user(request: Request) -> User:
    # Every view but the public ones requires authentication (the default permission).
    return cast(User, request.user)
