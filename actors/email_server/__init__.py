"""Layer 3, service: sends what the bus brings, within the delivery promises.

The email server's actor tree and what keeps its promises: throttle, safeguards,
suppression, idempotency.

Modules:

* ``idempotency``                 The email server's side of the claims record
                                  (``actors.stores.claims``): one batching actor.
* ``safeguards``                  What the senders of one email server share to keep the delivery
                                  promises.
* ``service``                     The email server: takes EmailSendEvents, sends them, reports what
                                  happened.
* ``suppression``                 The suppression list: addresses that refused email for good,
                                  never contacted again.
* ``suppression_elasticsearch``   The suppression list in Elasticsearch: shared by every worker, on
                                  every machine.
* ``throttle``                    Rate limits: the provider's token bucket, strict per-domain
                                  windows, adaptive slow-down.
"""
