"""Webhooks: signed HTTP callbacks for what happens to a user's tasks (and later their
withdrawals and disputes).

An event is written to an outbox in the same transaction as the change it reports, one row
per subscribed endpoint, so a crash can lose neither; a worker delivers it after the commit
and retries with backoff. Its body is rendered at the first attempt and stored once per
event (not per endpoint), with a task's large input and output left out. Emitting one from
a service is a single call, inside the service's transaction:

    from marketplace.webhooks.outbox import webhook_event_record

    webhook_event_record(owner_id=user_id, type="withdrawal.paid", object_id=str(pk))

Modules: `models` (endpoints, outbox rows, frozen event bodies, attempt log), `outbox`
(recording events and managing endpoints), `delivery` (the worker side), `transport` (the
SSRF-safe HTTP POST, and URL normalisation), `signing` (the signature header), `keyring`
(secrets encrypted at rest), `pings` (their rate limit), `events` (event types and how each
renders its `data`), `inline` (how much of a task a body carries), `tasks` (django-q2 entry
points). Nothing is imported here, so that `marketplace.models`
can import the models without a cycle.
"""
