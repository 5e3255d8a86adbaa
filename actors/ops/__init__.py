"""Layer 6, operator commands of supervisor.py.

console, dead letters and suppression, DKIM keys, soak, the gRPC client commands, batch send, and
their progress bars. Each command module has ``register(commands)``, which supervisor.py
calls to add its subcommands.

Modules:

* ``admin``        Operator commands on durable state: ``supervisor.py dlq ...`` and ``suppression
                   ...``.
* ``client``       ``supervisor.py send``, ``status`` and ``search``: gRPC clients of a running
                   ``up``.
* ``console``      ``supervisor.py console``: the actor trees of running services, live, and
                   commands on them.
* ``dkim``         ``supervisor.py dkim show DOMAIN`` and ``dkim keygen DOMAIN``: DKIM keys and
                   their DNS records.
* ``console_view`` The console's live view, laid out for the terminal it is drawn on.
* ``exits``        Exit statuses of supervisor.py, and the one line a start-up failure prints.
* ``progress``     Progress bars for long commands (``send --batch``, ``soak``, ``bench``), on
                   stderr.
* ``send_batch``   ``supervisor.py send --batch FILE``: many requests from a JSON-lines file, with
                   a progress bar.
* ``soak``         ``supervisor.py soak``: the distributed profile under faults, and every email
                   accounted for.
* ``templates``    ``supervisor.py templates list`` and ``templates preview NAME``: the templates as
                   the services see them, rendered without sending anything.
"""
