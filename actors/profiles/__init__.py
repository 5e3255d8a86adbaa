"""Layer 5, assembly: a config profile becomes running service trees.

Embedded (one process), distributed (one process per service), and the launcher that
supervises the distributed processes.

Modules:

* ``distributed``   One service per OS process: the distributed profile.
* ``embedded``      From a config profile to running services: edges chosen by config, trees
                    spawned in order.
* ``launcher``      ``supervisor.py up --profile distributed``: the three services as supervised OS
                    processes.
"""
