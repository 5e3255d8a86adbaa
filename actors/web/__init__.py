"""The web view: the email log, each email's story, templates and the live actor trees.

Layer: a front end over the layers below it, beside the HTTP edge it is served by. It
reads the store, renders with the domain's templates and MIME code, reaches auth for a
resend (in process, or over the gRPC API) and every process's control endpoint for the
trees. Its routes are mounted at ``/web`` on the process's HTTP server by
``actors.profiles.trees.http_routes``.

Modules:

- ``app``: the pages and actions (Starlette routes, jinja2 templates under ``templates/``,
  one script and one stylesheet under ``static/``).
- ``access``: login by the gRPC token, the signed session, CSRF, the security headers.
- ``mail``: a stored email rendered again, its MIME source, and a resend.
- ``charts``: emails/s by status and send latency over the last hour, as SVG, summed over
  every process.
- ``tree``: the actor trees (and the charts' samples) gathered from the control endpoints,
  and the actions on them; the tree page has them pushed as server-sent events.
"""

from actors.web.app import PREFIX, web_routes

__all__ = ["PREFIX", "web_routes"]
