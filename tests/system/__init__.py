"""Whole-system tests: embedded and distributed profiles, real processes, soak,
security end to end, the README's example."""
