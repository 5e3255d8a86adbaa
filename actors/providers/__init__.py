"""Layer 2, edge: how an email leaves (SMTP, SES, Maildir, failover chain).

Implements ``actors.domain.edges.Provider``: one module per kind, one builder per kind
(``build``), the failover chain and the circuit breaker in front of each provider.

Modules:

* ``breaker``   A circuit breaker: stop calling something that keeps failing, and probe it later.
* ``build``     From the ``[provider]`` config to a :class:`~actors.domain.edges.Provider`: one
                builder per kind.
* ``chain``     Failover: a chain of providers that is itself a
                :class:`~actors.domain.edges.Provider`.
* ``maildir``   A provider that delivers into a local Maildir: the embedded profile's "outbox".
* ``ses``       A provider that sends through Amazon SES, API v2 (``SendEmail`` with raw MIME
                content).
* ``smtp``      A provider that sends through an SMTP server, with a pool of kept-alive
                connections.
"""
