"""Tests of actors/integration/: the outbox sweeper."""
