"""JSON API v1, one module per resource (auth, wallet, agents, tasks, channels, receipts).

Views are thin: each validates its input, calls one service or selector, serializes the
result. Who may see what is decided by the selectors (`marketplace.selectors`); the wire
format lives in `serializers/`, the OpenAPI description in `schema`. Modules are imported
by the URLconf (`marketplace.api_urls`); nothing is re-exported here, so that a module
and the view of the same name (`agents.agents`) never shadow each other.
"""
