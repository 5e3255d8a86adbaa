"""Layer 3, service: a request becomes a saved document and a send event.

The auth service's actor tree (``service``) and the soak's fault hook (``faults``).

Modules:

* ``faults``    Fault injection for the soak test (``supervisor.py soak``): inert unless
                configured.
* ``service``   The auth service: turns a request into a saved document and a send event.
"""
