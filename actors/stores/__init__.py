"""Layer 2, edge: email documents and the email server's durable records.

Implements ``actors.domain.edges.Store`` (SQLite, Elasticsearch), and the building
blocks of durable writes (a shared SQLite file, the batching writer).

Modules:

* ``batching``               A base for actors that write in batches: up to N items or T
                             milliseconds.
* ``claims``                 Claims: who may hand an email to a provider, shared by every worker
                             that may receive it.
* ``claims_elasticsearch``   Claims in an Elasticsearch index: the distributed profile's shared
                             record (``actors.stores.claims``).
* ``claims_sqlite``          Claims in a SQLite file: the embedded profile's shared record
                             (``actors.stores.claims``).
* ``common``                 What both email stores share: the page token, the ``async with``
                             lifecycle.
* ``elasticsearch``          The distributed store: email documents in an Elasticsearch index;
                             the client plumbing of every index a service owns.
* ``sqlite``                 The embedded store: email documents in one SQLite file (the default on
                             a fresh machine).
* ``sqlite_file``            A small SQLite file shared by the workers of one machine: WAL, a read
                             and a write connection.
"""
