"""Shared fixtures: the runtime's test kit, and the real services the edges need."""

from runtime.testing import actor_system  # noqa: F401  (fixture)
