"""Layer 3, service: owner and only writer of email documents.

The integration service's actor tree and its outbox sweeper.

Modules:

* ``service``   The integration service: owner and only writer of email documents.
* ``sweeper``   The outbox sweeper: re-publishes emails that something dropped on the way.
"""
