"""Tests of actors/profiles/: how the profiles build their services from the config."""
