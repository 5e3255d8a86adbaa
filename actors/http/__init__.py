"""The HTTP edge: one Trio-native server per process, routes contributed by packages.

Layer: an edge, like ``actors.grpc``. hypercorn's Trio worker serves a Starlette
application in the actor system's own Trio run, so handlers ``await`` actor refs
directly, with no bridge. Packages that answer HTTP (the web view, SES feedback
over SNS, unsubscribe links) each give a list of Starlette routes; the profile
mounts them all on the process's one server (``[http]`` in the config).

Modules:

- ``server``: the :class:`HttpServer` actor, the request-size guard, ``/healthz``.
"""

from actors.http.server import HttpServer, RouteFactory, health_routes, public_url

__all__ = ["HttpServer", "RouteFactory", "health_routes", "public_url"]
