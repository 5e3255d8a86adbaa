"""Beside the layers, test servers, local services and the distributed-cluster harness.

Used by tests/, ``supervisor.py soak`` and bench/; no service imports this package.

Modules:

* ``cluster``         The distributed profile as child processes (``supervisor.py up``/``run``):
                      start, wait for the ready lines, stop, logs; its env and its teardown.
* ``fakesmtp``        aiosmtpd servers for tests and the soak: one that captures what it is sent,
                      one that fails on purpose.
* ``localservices``   Find or start the real servers the distributed profile needs on this machine.
* ``sns``             A stand-in for SNS and SES: signed messages, SES events, an HTTPS cert host.
* ``webhooks``        A webhook receiver (hypercorn on loopback) that verifies, dedupes and fails
                      on purpose; deleting a run's webhook queues.
"""
