"""Beside the layers, test servers and local services.

Used by tests/, ``supervisor.py soak`` and bench/; no service imports this package.

Modules:

* ``fakesmtp``        aiosmtpd servers for tests and the soak: one that captures what it is sent,
                      one that fails on purpose.
* ``localservices``   Find or start the real servers the distributed profile needs on this machine.
"""
