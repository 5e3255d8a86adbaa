"""Layer 2, metrics, the operations endpoints, logs and their redaction.

What a running service shows its operators; nothing here changes what is sent.

Modules:

* ``logs``         Logging set-up: readable text by default, JSON lines by option.
* ``metrics``      Prometheus metrics of one service process.
* ``operations``   Operating a running service: its control endpoint and its metrics endpoint.
* ``redact``       Secrets never reach a log line, whatever code wrote it.
"""
