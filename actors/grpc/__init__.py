"""Layer 4, edge: the gRPC API of auth and integration, and auth's client.

grpclib servers and clients over protos/, their security (TLS, tokens, sizes), and the
one conversion between proto messages and ``actors.domain.schema``.

Modules:

* ``api``                  The gRPC edge: grpclib servers and clients for the auth and integration
                           APIs.
* ``convert``              Conversion between the gRPC messages of protos/email.proto and
                           actors.domain.schema.
* ``intake``               How a unary gRPC request is taken in: read, decompressed, bounded, then
                           decoded.
* ``integration_client``   auth's way to integration over gRPC: concurrent saves grouped into one
                           call.
* ``security``             What guards the gRPC edge: TLS contexts, bearer tokens, a cap on request
                           size.
"""
