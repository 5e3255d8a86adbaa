"""Layer 5, assembly: a config profile becomes running service trees.

Embedded (one process), distributed (one process per service), and the launcher that
supervises the distributed processes; both profiles build each service tree with ``trees``.

Modules:

* ``cli``           ``supervisor.py up``, ``run`` and ``demo``: the commands that run the
                    services.
* ``distributed``   One service per OS process: the distributed profile.
* ``embedded``      From a config profile to running services: edges chosen by config, trees
                    spawned in order.
* ``launcher``      ``supervisor.py up --profile distributed``: the three services as supervised OS
                    processes.
* ``trees``         One builder per service tree and per edge, from the config; both profiles
                    call them.
"""
