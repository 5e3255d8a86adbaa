"""Layer 3, service: owner and only writer of email documents.

The integration service's actor tree, its outbox sweeper and its due-scanner.

Modules:

* ``scheduler`` The due-scanner: publishes scheduled emails (``send_at``) once they are due.
* ``service``   The integration service: owner and only writer of email documents.
* ``sweeper``   The outbox sweeper: re-publishes emails that something dropped on the way.
"""
