"""`Authorization: Bearer <API key>`, and the scope each endpoint asks of a key.

Every view declares, per method, the scope a key needs there:

    @key_scope(GET="tasks:read", POST="tasks:write")
    @api_view(["GET", "POST"])
    def tasks(request): ...

Default deny: a key is admitted only where a scope is declared. An endpoint that declares
none — key management, withdrawals, disputes, account changes, and any endpoint added
later without thinking about keys — answers a key with 403 `scope_required`. The check
sits in the authentication class itself, the one place every key-authenticated request
passes, so a view cannot forget it by choosing its own permission classes. Public views
(all permissions `AllowAny`: the schema and the docs) ignore a valid key, as they ignore
any caller; endpoints that take no credentials (`authentication_classes([])`) never look.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import AllowAny
from rest_framework.request import Request

from marketplace.apikey_models import ApiKey
from marketplace.apikeys import KeyRefused, api_key_allowlist, api_key_find, api_key_touch
from marketplace.errors import ScopeRequired
from marketplace.selectors.access import AgentAllowlist

# Declared where any valid key may come, whatever its scopes (the agent catalogue).
ANY_KEY = "any"
KEYWORD = "Bearer"
SCHEMA_FIELD = "x-api-key-scope"


def key_scope(**methods: str) -> Callable[[Any], Any]:
    """Declare the scope a key needs per HTTP method (HEAD follows GET). Apply it above
    `@api_view`, which turns the function into a view class this marks."""
    for scope in methods.values():
        if scope != ANY_KEY and scope not in ApiKey.Scope.values:
            raise ValueError(f"unknown scope {scope!r}")

    def mark(view: Any) -> Any:
        view.cls.key_scopes = {method.upper(): scope for method, scope in methods.items()}
        for method, scope in methods.items():
            # Published per operation, for programs choosing a key's scopes.
            view = extend_schema(methods=[method.upper()], extensions={SCHEMA_FIELD: scope})(view)
        return view

    return mark


def declared_scopes(view: Any) -> dict[str, str]:
    return dict(getattr(view, "key_scopes", None) or {})


def api_key_of(request: Request) -> ApiKey | None:
    """The key the request came with, or None for a session or the user token."""
    return request.auth if isinstance(request.auth, ApiKey) else None


def agent_allowlist(request: Request) -> AgentAllowlist | None:
    """The agents the request's key is limited to: everything it does (spending, editing,
    uploads, reading and cancelling tasks, channels) keeps to them. None for a key that may
    use any agent, and for a session or the account's token, which act for the account."""
    key = api_key_of(request)
    return None if key is None else api_key_allowlist(key)


def _is_public(view: Any) -> bool:
    classes = getattr(view, "permission_classes", None) or []
    return bool(classes) and all(isinstance(c, type) and issubclass(c, AllowAny) for c in classes)


def admit(key: ApiKey, view: Any, method: str) -> bool:
    """Whether the view serves this key (False: treat the caller as anonymous).
    Raises ScopeRequired when the key may not use the endpoint."""
    if view is None:
        raise ScopeRequired("API keys cannot be used here.", fields={"required_scope": None})
    scopes = declared_scopes(view)
    if not scopes and _is_public(view):
        return False
    if method not in getattr(view, "allowed_methods", ()):
        return True  # the view answers 405 itself; nothing runs
    if not scopes:
        raise ScopeRequired(
            "API keys cannot use this endpoint; use a session or the account's token.",
            fields={"required_scope": None, "key_scopes": key.scopes},
        )
    if method == "OPTIONS":
        return True
    needed = scopes.get("GET" if method == "HEAD" else method)
    if needed is None:
        raise ScopeRequired(
            f"API keys cannot use {method} here; use a session or the account's token.",
            fields={"required_scope": None, "key_scopes": key.scopes},
        )
    if needed != ANY_KEY and needed not in key.scopes:
        raise ScopeRequired(
            f"This API key needs the `{needed}` scope for this request.",
            fields={"required_scope": needed, "key_scopes": key.scopes},
        )
    return True


class ApiKeyAuthentication(BaseAuthentication):
    """A Bearer API key: 401 if unknown, revoked or expired; 403 `scope_required` where the
    endpoint does not admit it. Sets `request.user` to the key's user, `request.auth` to
    the key."""

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != KEYWORD.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Send the key as `Authorization: Bearer <key>`, with no spaces in the key."
            )
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        try:
            key = api_key_find(raw)
        except KeyRefused as refused:
            raise exceptions.AuthenticationFailed(refused.message) from None
        view = (request.parser_context or {}).get("view")
        if not admit(key, view, (request.method or "").upper()):
            return None
        api_key_touch(key)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return f'{KEYWORD} realm="api"'


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """The OpenAPI security scheme, listed only on operations that admit keys."""

    target_class = ApiKeyAuthentication
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            **build_bearer_security_scheme_object(
                header_name="Authorization", token_prefix=KEYWORD
            ),
            "description": "An API key (`axk_…`) with scopes and spending limits. The scope "
            f"an operation needs is its `{SCHEMA_FIELD}` (`any`: any key); operations "
            "without this scheme (key management, withdrawals, disputes, account changes) "
            "admit no key.",
        }

    def get_security_requirement(
        self, auto_schema: Any
    ) -> dict[str, list[Any]] | list[dict[str, list[Any]]]:
        if declared_scopes(auto_schema.view).get(auto_schema.method.upper()) is None:
            return []  # no requirement: this operation admits no key
        return {self.name: []}
