"""Layer 3, beside integration: events out to the user's systems.

Signed webhooks (Standard Webhooks) for the statuses integration stores, delivered at
least once from a durable queue (SQLite outbox embedded, RabbitMQ distributed), and
RFC 8058 one-click unsubscribe links with the route that applies them.

Modules:

* ``signing``      ``sign`` and ``verify``: the signature scheme, stdlib only (receivers copy it).
* ``events``       The queued item, its JSON body, routing by status and category, and the
                   listener integration calls after each stored batch.
* ``delivery``     One HTTP try: the SSRF guard, the signed POST, what the answer means.
* ``outbox``       The queue interface and the SQLite outbox (embedded).
* ``rabbit``       The RabbitMQ queues (distributed): per endpoint, a retry queue, failed.
* ``dispatcher``   The WebhookDispatcher actor: per-endpoint loops, breaker, backoff.
* ``service``      What a profile wires: the queue, the listener and the dispatcher's spec.
* ``unsubscribe``  Tokens, List-Unsubscribe, the HTTP routes and the mailto handler.
* ``cli``          ``supervisor.py webhooks list-failed | replay``.
"""

from actors.webhooks.dispatcher import WebhookDispatcher, backoff
from actors.webhooks.events import Routes, WebhookEvents, WebhookItem, event_body, webhook_id
from actors.webhooks.outbox import Job, SqliteOutbox, WebhookQueue
from actors.webhooks.service import Webhooks, make_queue, open_webhooks
from actors.webhooks.signing import WebhookVerificationError, sign, verify
from actors.webhooks.unsubscribe import (
    TokenError,
    UnsubscribeMail,
    UnsubscribeTokens,
    list_unsubscribe,
    unsubscribe_routes,
)

__all__ = [
    "Job",
    "Routes",
    "SqliteOutbox",
    "TokenError",
    "UnsubscribeMail",
    "UnsubscribeTokens",
    "WebhookDispatcher",
    "WebhookEvents",
    "WebhookItem",
    "WebhookQueue",
    "WebhookVerificationError",
    "Webhooks",
    "backoff",
    "event_body",
    "list_unsubscribe",
    "make_queue",
    "open_webhooks",
    "sign",
    "unsubscribe_routes",
    "verify",
    "webhook_id",
]
