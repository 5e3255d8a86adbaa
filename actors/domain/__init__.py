"""Layer 1, what an email is and the rules on it; the edge interfaces.

Pure: no I/O and no actors. ``edges`` defines the interfaces (Store, Provider, Bus)
that everything above depends on, never a client.

Modules:

* ``dkim``           DKIM signing (RFC 6376) of a rendered message: rsa-sha256 and ed25519-sha256
                     (RFC 8463).
* ``addressing``     Checks on what a request adds to the basic email: sender, Reply-To, cc, bcc,
                     headers, tags, metadata and send_at.
* ``edges``          The edge interfaces: store, provider, bus. Actors depend on these, never on a
                     client.
* ``event_checks``   Checks on what arrives from the bus and through SaveEmail: the same rules as a
                     request.
* ``mime``           Turning an :class:`~actors.domain.edges.OutgoingEmail` into an RFC 5322
                     message.
* ``schema``         Message schemas of the email domain: one module, so the wire form lives in one
                     place.
* ``templates``      Email templates: a sandboxed Jinja2 environment over a directory of named
                     templates.
* ``validation``     Checks on an email request before it is accepted: one clear error per bad
                     field.
"""
