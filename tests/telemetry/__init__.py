"""Tests of actors/telemetry/ and runtime's control endpoint, in one process."""
