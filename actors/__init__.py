"""The email system built on the runtime: one subpackage per part of the architecture.

In layer order: a package imports only from packages listed before it (and from
runtime/ and config/).

 1  ``domain/``         what an email is and the rules on it; the edge interfaces
 2  ``bus/``            edge: the message bus between the services
 2  ``stores/``         edge: email documents and the email server's durable records
 2  ``providers/``      edge: how an email leaves (SMTP, SES, Maildir, failover chain)
 2  ``telemetry/``      metrics, the operations endpoints, logs and their redaction
 3  ``auth/``           service: a request becomes a saved document and a send event
 3  ``integration/``    service: owner and only writer of email documents
 3  ``email_server/``   service: sends what the bus brings, within the delivery promises
 4  ``grpc/``           edge: the gRPC API of auth and integration, and auth's client
 5  ``profiles/``       assembly: a config profile becomes running service trees
    ``testing/``        beside the layers: test servers, local services, the cluster harness
 6  ``ops/``            operator commands of supervisor.py
"""
