"""Tests of actors/ops/: the operator commands (console, admin)."""
