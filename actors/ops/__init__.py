"""Layer 6, operator commands of supervisor.py.

console, dead letters and suppression, soak, batch send, and their progress bars.

Modules:

* ``admin``        Operator commands on durable state: ``supervisor.py dlq ...`` and ``suppression
                   ...``.
* ``console``      ``supervisor.py console``: the actor trees of running services, live, and
                   commands on them.
* ``progress``     Progress bars for long commands (``send --batch``, ``soak``, ``bench``), on
                   stderr.
* ``send_batch``   ``supervisor.py send --batch FILE``: many requests from a JSON-lines file, with
                   a progress bar.
* ``soak``         ``supervisor.py soak``: the distributed profile under faults, and every email
                   accounted for.
"""
