"""Tests of actors/grpc/: the proto contract, SaveEmails and auth's client."""
